#!/bin/sh
# Writes the page served at "/" to stdout: PAGE (server/http/web/index.html) with its line
# holding the marker "resattn:examples" replaced by a JavaScript array of the example
# pictures (models/examples/*.png) as data: URLs, so that the page shows them as thumbnails
# without a route of their own and the binary stays self-contained. Called by the Makefile:
#   server/http/web/embed_examples.sh PAGE PNG... > build/web/index.html
set -eu
[ $# -ge 1 ] || { echo "usage: $0 PAGE [PNG...]" >&2; exit 2; }
page=$1
shift
n=$(grep -c 'resattn:examples' "$page" || true)
[ "$n" = 1 ] || { echo "$page: expected one line with the marker resattn:examples, found $n" >&2; exit 1; }
sed '/resattn:examples/,$d' "$page"
echo 'const EXAMPLES = ['
for f in "$@"; do
    name=$(basename "$f")
    case "$name" in
    *[!A-Za-z0-9._-]*) echo "$f: example file names may hold only letters, digits, '.', '_' and '-'" >&2; exit 1 ;;
    esac
    printf '  { name: "%s", src: "data:image/png;base64,%s" },\n' "$name" "$(base64 -w0 "$f")"
done
echo '];'
sed '1,/resattn:examples/d' "$page"
