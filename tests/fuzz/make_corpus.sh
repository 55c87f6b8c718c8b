#!/bin/sh
# Seeds for tests/fuzz/fuzz_image.c from the test fixtures: "<target byte><type byte><payload>".
set -e
cd "$(dirname "$0")/.."
out=tests/fuzz/corpus_image
mkdir -p "$out"
seed() { { printf "$1"; cat "$2"; } > "$out/$3"; }
seed '\000\000' tests/fixtures/images/palette.png img-palette
seed '\000\000' tests/fixtures/images/gray.jpg img-gray-jpg
seed '\000\000' tests/fixtures/images/progressive.jpg img-progressive
seed '\000\000' tests/fixtures/images/gray16.png img-gray16
seed '\002\001' models/examples/0_ankle-boot.png predict-raw
printf '\001\000--XyZ\r\nContent-Disposition: form-data; name="image"; filename="a"\r\nContent-Type: image/png\r\n\r\nDATA\r\n--XyZ\r\nContent-Disposition: form-data; name=top_k\r\n\r\n3\r\n--XyZ--\r\n' > "$out/multipart"
{ printf '\002\002{"images":["'; base64 -w0 tests/fixtures/images/tiny.png; printf '"],"top_k":2}'; } > "$out/predict-json"
{ printf '\003\002{"id":"x","inputs":[{"name":"image","shape":[1],"datatype":"BYTES","data":["'; base64 -w0 tests/fixtures/images/tiny.png; printf '"]}]}'; } > "$out/v2-bytes"
{ printf '\003\002{"inputs":[{"name":"image","shape":[1],"datatype":"BYTES","data":["'; base64 -w0 tests/fixtures/images/tiny.png; printf '"]}],"outputs":[{"name":"probabilities","parameters":{"classification":2,"binary_data":true}},{"name":"top_k_labels"}],"parameters":{"top_k":2,"binary_data_output":true}}'; } > "$out/v2-bytes-outputs"
printf '\004\000QUJD\r\nRA==' > "$out/base64"
# target 5: v2 with the binary extension; the header length and each element's length are
# little-endian (octal escapes for printf)
le() { printf "\\$(printf %03o $(($1 % 256)))\\$(printf %03o $(($1 / 256 % 256)))"; }
png=tests/fixtures/images/tiny.png
n=$(wc -c < "$png")
hdr=$(printf '{"inputs":[{"name":"image","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":%d}}],"outputs":[{"name":"logits","parameters":{"classification":2}}]}' $((n + 4)))
{ printf '\005\003'; le ${#hdr}; printf '%s' "$hdr"; le "$n"; printf '\000\000'; cat "$png"; } > "$out/v2-binary-bytes"
