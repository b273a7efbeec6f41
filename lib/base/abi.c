/* Structs that cross the public API at a size the caller chose (abi.h). */
#include "base/abi.h"

#include <string.h>

#include "tern/tern.h"

int tern__abi_config_in(void *full, size_t full_size, size_t min_size, const void *in,
                        size_t in_size, const char **why) {
  if (in_size == 0) {
    *why = "struct_size is 0: fill the config with its _default function first";
    return TERN_EINVAL;
  }
  if (in_size < min_size) {
    *why = "struct_size is smaller than any layout of this struct";
    return TERN_EINVAL;
  }
  const unsigned char *p = in;
  for (size_t i = full_size; i < in_size; i++) {
    if (p[i]) {
      *why = "the config sets a field this (older) library does not know";
      return TERN_EINVAL;
    }
  }
  memcpy(full, in, in_size < full_size ? in_size : full_size);
  *why = NULL;
  return 0;
}

void tern__abi_out(void *dst, size_t dst_size, const void *src, size_t src_size) {
  memcpy(dst, src, dst_size < src_size ? dst_size : src_size);
  if (dst_size > src_size) memset((char *)dst + src_size, 0, dst_size - src_size);
}
