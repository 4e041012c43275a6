// libsodium (Debian: libsodium-dev) — ed25519 signatures and SHA-2 for firmware images and downloads.
#include <sodium.h>
