#include <stddef.h>
#include <stdint.h>

// libFuzzer's own entry point (compiler-rt FuzzerInterface.h): the targets' main hands over to it, since
// SwiftPM points `main` at the executable module's `<Module>_main` (see Fuzz/Sources/FuzzSupport).
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
