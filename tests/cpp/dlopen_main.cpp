// dlopen_main.cpp: loads a library with dlopen and runs its metal_mock_main, as Python
// loads an extension module that brings libtt_metal.so in (`import ttnn`).
//   dlopen_main LIBRARY ARGS...
#include <cstdio>
#include <dlfcn.h>

int main(int argc, char** argv) {
    if (argc < 2) return 2;
    void* h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    auto run = (int (*)(int, char**))dlsym(h, "metal_mock_main");
    if (!run) return 1;
    return run(argc - 1, argv + 1);
}
