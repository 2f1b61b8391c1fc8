// Header only: the declaration of libFuzzer's driver, which the fuzzer runtime defines.
#include "CFuzzDriver.h"
