#!/usr/bin/env bash
# Builds ngx_foko_chat_module.so against the distribution's nginx: a copy of
# the configured source tree from nginx-dev, configured with the same flags
# plus this module, then "make modules".  Output: build/ngx_foko_chat_module.so
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
nginx_src=${NGINX_SRC:-/usr/share/nginx/src}
build=$root/build
tree=$build/nginx

if [ ! -f "$nginx_src/conf_flags" ]; then
    echo "build-module: $nginx_src/conf_flags not found (apt-get install nginx-dev)" >&2
    exit 1
fi

# conf_flags defines the bash array NGX_CONF_FLAGS
# shellcheck disable=SC1091
. "$nginx_src/conf_flags"

stamp=$tree/.foko-configured
# configure again whenever the flags or the add-on's file list change
want="${NGX_CONF_FLAGS[*]} ${FOKO_CC_OPT:-} $(sha1sum < "$root/config")"

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    rm -rf "$tree"
    mkdir -p "$tree"
    cp -a "$nginx_src/." "$tree/"
    (cd "$tree" && ./configure "${NGX_CONF_FLAGS[@]}" \
        --with-cc-opt="-g -O2 ${FOKO_CC_OPT:-}" \
        --add-dynamic-module="$root" > "$build/configure.log" 2>&1) || {
        tail -30 "$build/configure.log" >&2
        exit 1
    }
    echo "$want" > "$stamp"
fi

make -s -C "$tree" -f objs/Makefile modules
cp "$tree/objs/ngx_foko_chat_module.so" "$build/ngx_foko_chat_module.so"
echo "built $build/ngx_foko_chat_module.so"
