#!/usr/bin/env bash
# Seeds the `parse` fuzz target's corpus with the example pipelines, valid and invalid.
# Run from anywhere; copies into fuzz/corpus/parse (gitignored), keeping what is there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/fuzz/corpus/parse"
mkdir -p "$dest"
shopt -s nullglob
n=0
for f in "$root"/pipelines/*.groovy "$root"/pipelines/invalid/*.groovy; do
    case "$f" in
        */invalid/*) name="invalid-$(basename "$f")" ;;
        *) name="$(basename "$f")" ;;
    esac
    cp "$f" "$dest/$name"
    n=$((n + 1))
done
echo "seeded $n files into ${dest#"$root"/}"
