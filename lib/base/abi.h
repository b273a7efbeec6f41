/*
 * The rules that let tern.h's structs grow without breaking programs built
 * against an older (or newer) header (tern.h, "ABI and growing structs"):
 * config structs come in with their struct_size, out-structs go out to the
 * caller's size. One home for both, used by every public _new and every
 * public function that fills a struct. May include: nothing of tern's.
 */
#ifndef TERN_ABI_H
#define TERN_ABI_H

#include <stddef.h>

/* Copies a caller's config of `in_size` bytes (its struct_size) over
 * `full`, a struct of this library's size `full_size` that already holds
 * the defaults: the fields an older caller lacks keep them. A size of 0
 * (the struct was never given to its _default function), below `min_size`
 * (the first released layout), or larger than `full_size` with a non-zero
 * byte past it (a newer field this library cannot honour) is refused:
 * returns TERN_EINVAL with a reason in *why. Returns 0. */
int tern__abi_config_in(void *full, size_t full_size, size_t min_size, const void *in,
                        size_t in_size, const char **why);

/* Copies `src` (this library's struct of `src_size` bytes) to the caller's
 * struct of `dst_size` bytes: cut to the caller's size, or zero-filled past
 * ours for a caller that knows more fields than this library. */
void tern__abi_out(void *dst, size_t dst_size, const void *src, size_t src_size);

#endif
