#!/usr/bin/env bash
# Builds ngx_foko_chat_module.so against the distribution's nginx: a copy of
# the configured source tree from nginx-dev, configured with the same flags
# plus this module, then "make modules".  Output: build/ngx_foko_chat_module.so
#
# FOKO_SANITIZE=1 builds with AddressSanitizer and UBSan into build-asan/
# instead; the stock nginx then runs it with libasan preloaded.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
nginx_src=${NGINX_SRC:-/usr/share/nginx/src}
build=$root/build
cc_opt=
ld_opt=

if [ -n "${FOKO_SANITIZE:-}" ]; then
    build=$root/build-asan
    cc_opt="-fsanitize=address,undefined -fno-omit-frame-pointer"
    cc_opt="$cc_opt -fno-sanitize-recover=undefined"
    ld_opt="-fsanitize=address,undefined"
fi

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
want="${NGX_CONF_FLAGS[*]} $cc_opt $(sha1sum < "$root/config")"

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    rm -rf "$tree"
    mkdir -p "$tree" "$build"
    cp -a "$nginx_src/." "$tree/"
    (cd "$tree" && ./configure "${NGX_CONF_FLAGS[@]}" \
        --with-cc-opt="-g -O2 $cc_opt" --with-ld-opt="$ld_opt" \
        --add-dynamic-module="$root" > "$build/configure.log" 2>&1) || {
        tail -30 "$build/configure.log" >&2
        exit 1
    }
    echo "$want" > "$stamp"
fi

make -s -C "$tree" -f objs/Makefile modules
# a new file, renamed over the old one: an nginx running the old module
# keeps its mapping instead of crashing on a file rewritten under it
cp "$tree/objs/ngx_foko_chat_module.so" "$build/.ngx_foko_chat_module.so.new"
mv -f "$build/.ngx_foko_chat_module.so.new" "$build/ngx_foko_chat_module.so"
echo "built $build/ngx_foko_chat_module.so"
