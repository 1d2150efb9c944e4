/*
 * minimal_ring.h: the baseline of benches/c/bursts.c, a minimal single-producer ring of
 * the same 32-byte records as a lane's (a sequence number, the kind word, size, id):
 * 32768 slots, its head and tail on their own cache lines, the producer caching the
 * tail, drained by a consumer that lets a batch pile up. No thread-local lookup, no
 * state check, a sequence number private to the one producer: what is left is the
 * ring's own stores.
 *
 * Each file that includes it has a ring of its own (static storage): bursts.c one
 * inlined into its loop, minimal_ring.c one behind a shared library's call.
 */
#ifndef MINIMAL_RING_H
#define MINIMAL_RING_H
#include <stdatomic.h>
#include <stdint.h>

#define RING_CAP 32768u

static struct {
    _Alignas(64) _Atomic uint64_t head;
    _Alignas(64) _Atomic uint64_t tail;
    _Alignas(64) uint64_t slots[RING_CAP][4];
} ring;
/* The producer's own: its copy of the head, the tail it last saw, its sequence. */
static struct {
    _Alignas(64) uint64_t head, cached_tail, seq;
} ring_producer;

static inline void ring_push(uint64_t kind_word, uint64_t size, uint64_t id) {
    uint64_t h = ring_producer.head;
    while (h - ring_producer.cached_tail >= RING_CAP)
        ring_producer.cached_tail = atomic_load_explicit(&ring.tail, memory_order_acquire);
    uint64_t *s = ring.slots[h & (RING_CAP - 1)];
    s[0] = ring_producer.seq++;
    s[1] = kind_word;
    s[2] = size;
    s[3] = id;
    ring_producer.head = h + 1;
    atomic_store_explicit(&ring.head, h + 1, memory_order_release);
}

/* The consumer: reads every record published so far, then releases them. */
static inline uint64_t ring_drain(void) {
    uint64_t sum = 0;
    uint64_t h = atomic_load_explicit(&ring.head, memory_order_acquire);
    uint64_t t = atomic_load_explicit(&ring.tail, memory_order_relaxed);
    for (; t < h; t++) sum += ring.slots[t & (RING_CAP - 1)][2];
    atomic_store_explicit(&ring.tail, t, memory_order_release);
    return sum;
}

/* The kind word of a lane's record: kind in the low byte, then subtype, device above. */
static inline uint64_t ring_kind_word(int kind, int subtype, int device) {
    return (uint64_t)(uint8_t)kind | (uint64_t)(uint8_t)subtype << 8 |
           (uint64_t)(uint32_t)device << 32;
}
#endif
