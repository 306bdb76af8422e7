#!/usr/bin/env bash
# make deb: packages build/ngx_foko_chat_module.so as Debian packages its
# own nginx modules (libnginx-mod-*): the module in /usr/lib/nginx/modules,
# its load_module line in /usr/share/nginx/modules-available, enabled by the
# maintainer scripts through /etc/nginx/modules-enabled, a dependency on
# the nginx ABI the module was built for, and the shared libraries'
# packages from dpkg-shlibdeps.  Output:
# build/libnginx-mod-foko-chat_<version>_<arch>.deb
#
# The version is the top entry of packaging/debian/changelog.
# FOKO_DEB_MODULE: another .so to package; FOKO_DEB_DIR: another output
# folder; NGINX_SRC: the configured nginx tree the module was built from.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
meta=$root/packaging/debian
pkg=libnginx-mod-foko-chat
module=${FOKO_DEB_MODULE:-$root/build/ngx_foko_chat_module.so}
out=${FOKO_DEB_DIR:-$root/build}
nginx_src=${NGINX_SRC:-/usr/share/nginx/src}

for tool in dpkg-deb dpkg-shlibdeps dpkg-gencontrol dpkg-parsechangelog; do
    command -v "$tool" > /dev/null || {
        echo "deb: $tool not found (apt-get install dpkg-dev)" >&2
        exit 1
    }
done

if [ ! -f "$module" ]; then
    echo "deb: $module not found (make build)" >&2
    exit 1
fi

version=$(dpkg-parsechangelog -l "$meta/changelog" -S Version)
arch=$(dpkg --print-architecture)

# The ABI of the nginx the module was built against, as dh_nginx reads it;
# an nginx without that name in its Provides refuses to load the module.
abi=
abivars=$nginx_src/debian/libnginx-mod.abisubstvars
if [ -f "$abivars" ]; then
    abi=$(sed -n 's/^nginx:abi=//p' "$abivars")
fi
installed=$(dpkg-query -W -f '${Provides}' nginx 2>/dev/null |
            tr ',' '\n' | sed -n 's/^ *\(nginx-abi-[^ ]*\).*/\1/p')
if [ -z "$abi" ]; then
    abi=$installed
fi
if [ -z "$abi" ]; then
    echo "deb: no nginx ABI: neither $abivars nor an installed nginx" \
         "that provides nginx-abi-*" >&2
    exit 1
fi
if [ -n "$installed" ] && [ "$installed" != "$abi" ]; then
    echo "deb: warning: the module is built for $abi but the installed" \
         "nginx provides $installed; the package will not install here" >&2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# dpkg-shlibdeps and dpkg-gencontrol read debian/ in the current folder
mkdir -p "$tmp/debian"
cp "$meta/control" "$meta/changelog" "$tmp/debian/"
stage=$tmp/debian/$pkg
doc=$stage/usr/share/doc/$pkg

umask 022
install -d "$stage/DEBIAN" "$stage/usr/lib/nginx/modules" \
    "$stage/usr/share/nginx/modules-available" "$doc"

install -m 644 "$module" "$stage/usr/lib/nginx/modules/"
# as dh_strip does; the symbols stay in build/
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
    "$stage/usr/lib/nginx/modules/ngx_foko_chat_module.so"

install -m 644 "$meta/mod-foko-chat.conf" \
    "$stage/usr/share/nginx/modules-available/"
install -m 644 "$meta/copyright" "$doc/"
gzip -9n < "$meta/changelog" > "$doc/changelog.Debian.gz"
gzip -9n < "$root/README.md" > "$doc/README.md.gz"
chmod 644 "$doc/changelog.Debian.gz" "$doc/README.md.gz"

for script in postinst prerm postrm; do
    install -m 755 "$meta/$script" "$stage/DEBIAN/"
done

(
    cd "$tmp"
    dpkg-shlibdeps -Tdebian/substvars \
        "debian/$pkg/usr/lib/nginx/modules/ngx_foko_chat_module.so"
    dpkg-gencontrol -p"$pkg" -Tdebian/substvars -fdebian/files \
        -P"debian/$pkg" -V"nginx:abi=$abi" -V"misc:Depends="
)

(cd "$stage" && find . -type f ! -path './DEBIAN/*' -printf '%P\n' |
    LC_ALL=C sort | xargs -d '\n' md5sum) > "$stage/DEBIAN/md5sums"
chmod 644 "$stage/DEBIAN/md5sums"

# the same files give the same package: times from the changelog
SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -l "$meta/changelog" -S Timestamp)
export SOURCE_DATE_EPOCH
find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$out"
deb=$out/${pkg}_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" > /dev/null
echo "built $deb ($abi)"
