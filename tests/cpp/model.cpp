// model.cpp: a program linked against the stand-in instrumented library.
#include <cstdio>
#include <cstdlib>
#include <unistd.h>
extern "C" void fake_metal_run(int layers);
int main(int argc, char** argv) {
    fake_metal_run(argc > 1 ? atoi(argv[1]) : 10);
    printf("done\n");
    fflush(stdout);
    sleep(argc > 2 ? atoi(argv[2]) : 0);
    return 0;
}
