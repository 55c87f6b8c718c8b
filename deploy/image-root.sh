#!/bin/sh
# Assembles the root filesystem of the distroless image (the Dockerfile's build stage runs it;
# the final stage is `FROM scratch` + this directory):
#   usr/local/bin/resattn        the binary (built-in model and web page inside)
#   every shared library `ldd` lists for it, copied (symlinks resolved) to the path ldd prints,
#   the dynamic loader named in the binary's program header (PT_INTERP),
#   etc/passwd, etc/group        root and resattn (UID/GID 10001), so tools show a name
#   models/                      empty, owned by 10001 (mount point for your models)
# and nothing else: no shell, no package manager, no coreutils. A library ldd cannot find
# fails here, at build time, instead of at the first start. New libraries (a new -dev package
# in the build stage) come along without edits. Then the binary is run inside the new root
# (chroot), which proves that the loader finds every library there without ld.so.cache.
#
#   deploy/image-root.sh BINARY ROOT     (as root: chroot and chown)
set -eu
bin=$1
root=$2
die() {
    echo "image-root.sh: $*" >&2
    exit 1
}
[ -x "$bin" ] || die "$bin is not an executable"
[ ! -e "$root" ] || [ -z "$(ls -A "$root")" ] || die "$root is not empty"
mkdir -p "$root/usr/local/bin" "$root/etc" "$root/models"
cp "$bin" "$root/usr/local/bin/resattn"

deps=$(ldd "$bin") || die "ldd $bin failed"
echo "$deps"
if echo "$deps" | grep -q 'not found'; then
    die "shared libraries missing: $(echo "$deps" | grep 'not found' | tr -s ' \t' ' ')"
fi
# "libx.so.1 => /lib/.../libx.so.1 (0x...)" and the loader's "/lib64/ld-linux-x86-64.so.2 (0x...)";
# linux-vdso has no file.
paths=$(echo "$deps" | sed -n 's/^.* => \(\/[^ ]*\) (0x[0-9a-f]*)$/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (0x[0-9a-f]*)$/\1/p')
[ -n "$paths" ] || die "ldd listed no libraries"
for p in $paths; do
    mkdir -p "$root${p%/*}"
    cp -L "$p" "$root$p"
done
interp=$(readelf -l "$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)]$/\1/p')
[ -n "$interp" ] || die "$bin names no program interpreter (static binary?)"
if [ ! -f "$root$interp" ]; then
    mkdir -p "$root${interp%/*}"
    cp -L "$interp" "$root$interp"
fi
# OpenBLAS must be the pthread build: the serial one gives wrong results when several workers
# call it at once (Debian's alternatives pick pthread unless another variant was installed).
blas=$(echo "$paths" | grep '/libopenblas\.so' || true)
if [ -n "$blas" ]; then
    case $(readlink -f "$blas") in
    */openblas-pthread/*) ;;
    *) die "$blas is $(readlink -f "$blas"), not the pthread build of OpenBLAS" ;;
    esac
fi

printf 'root:x:0:0:root:/root:/sbin/nologin\nresattn:x:10001:10001:resattn:/nonexistent:/sbin/nologin\n' \
    >"$root/etc/passwd"
printf 'root:x:0:\nresattn:x:10001:\n' >"$root/etc/group"
chmod 0644 "$root/etc/passwd" "$root/etc/group"
chmod 0755 "$root/usr/local/bin/resattn" "$root/models"
chown 10001:10001 "$root/models"

# The binary starts inside the new root with nothing but what was copied.
chroot "$root" /usr/local/bin/resattn --version || die "the binary does not start in $root"
echo "image-root.sh: $(find "$root" -type f | wc -l) files, $(du -sb "$root" | cut -f1) bytes in $root"
