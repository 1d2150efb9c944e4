/*
 * minimal_ring.c: the minimal ring of minimal_ring.h behind a shared library's call,
 * with the signatures of tttrack_alloc and tttrack_free: the baseline for what a
 * program pays to report an event to any library it links, the call included.
 */
#include "minimal_ring.h"

void minimal_ring_alloc(int device, uint64_t size, int buffer_type, uint64_t id) {
    ring_push(ring_kind_word(1, buffer_type, device), size, id);
}

void minimal_ring_free(int device, uint64_t id) { ring_push(ring_kind_word(2, 0, device), 0, id); }

uint64_t minimal_ring_drain(void) { return ring_drain(); }
