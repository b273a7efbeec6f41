/* Built against an installed libtern by install_test.sh: proves the headers,
 * the CMake package and the pkg-config file are usable from a prefix. */
#include <stdio.h>
#include <string.h>
#include <tern/tern.h>

int main(void) {
  if (strcmp(tern_version(), TERN_VERSION_STRING) != 0) {
    fprintf(stderr, "header %s but library %s\n", TERN_VERSION_STRING, tern_version());
    return 1;
  }
  tern_keypair kp;
  if (tern_keypair_generate(&kp) != 0) return 1;
  char hex[TERN_KEY_HEX_BYTES];
  tern_key_to_hex(kp.public_key, hex);
  printf("tern %s ok %zu\n", tern_version(), strlen(hex));
  return 0;
}
