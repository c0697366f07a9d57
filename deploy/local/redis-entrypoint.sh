#!/bin/sh
# As the official redis image does: a server started without a configuration file
# accepts connections from other containers (its network is the protection).
set -eu
if [ "${1:-}" = redis-server ]; then
  shift
  set -- redis-server --protected-mode no "$@"
fi
exec "$@"
