/* The version of the library as built, for comparison with the headers. */
#include "tern/tern.h"

const char *tern_version(void) { return TERN_VERSION_STRING; }

uint32_t tern_version_number(void) { return (uint32_t)TERN_VERSION_HEX; }
