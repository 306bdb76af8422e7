#!/usr/bin/env bash
# Builds every libFuzzer target fuzz/<name>_fuzz.c with clang and runs each
# for a bounded time on its seeds, fuzz/corpus/<name>/.  Exits non-zero on
# the first crash, leak, sanitizer report or failed check; the input that
# did it is left in build/fuzz/artifacts/.
#
#     fuzz/run.sh                  every target, 60 s each
#     FUZZ_TIME=600 fuzz/run.sh ws_frame
#
# Inputs libFuzzer finds are kept in build/fuzz/corpus/<name>/, outside the
# repository's seeds; to replay a crash: build/fuzz/<name>_fuzz <file>.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
time_limit=${FUZZ_TIME:-60}
out=$root/build/fuzz
cc=${FUZZ_CC:-clang}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# clang and its runtimes (libFuzzer, the sanitizers), which clang only
# recommends
if ! command -v "$cc" >/dev/null || ! dpkg -s libclang-rt-dev >/dev/null 2>&1
then
    echo "fuzz: installing clang and its runtimes"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends clang libclang-rt-dev \
        >/dev/null
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for src in "$root"/fuzz/*_fuzz.c; do
        name=$(basename "$src" _fuzz.c)
        targets+=("$name")
    done
fi

# the code under test of each target, built outside nginx with a shim
sources_of() {
    case $1 in
    ws_frame)
        echo "$root/ngx_foko_chat_module/ngx_foko_chat_ws_frame.c" ;;
    ws_command)
        echo "$root/ngx_foko_chat_module/ngx_foko_chat_ws_command.c" \
            "$(pkg-config --libs jansson)" ;;
    *)
        echo "fuzz: fuzz/run.sh does not know the sources of $1" >&2
        return 1 ;;
    esac
}

mkdir -p "$out/artifacts"

for name in "${targets[@]}"; do
    src=$root/fuzz/${name}_fuzz.c
    bin=$out/${name}_fuzz
    seeds=$root/fuzz/corpus/$name
    corpus=$out/corpus/$name

    [ -f "$src" ] || { echo "fuzz: no $src" >&2; exit 1; }
    sources=$(sources_of "$name")

    # shellcheck disable=SC2086
    "$cc" -g -O1 -fsanitize=fuzzer,address,undefined \
        -fno-sanitize-recover=all -fno-omit-frame-pointer \
        -DNGX_FOKO_CHAT_WS_STANDALONE=1 \
        -I "$root/t" -I "$root/ngx_foko_chat_module" \
        -o "$bin" "$src" $sources

    mkdir -p "$corpus"

    echo "fuzz: $name for ${time_limit}s"

    # new inputs go to the first directory; the seeds are only read
    "$bin" -max_total_time="$time_limit" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$out/artifacts/${name}-" \
        "$corpus" "$seeds"
done
