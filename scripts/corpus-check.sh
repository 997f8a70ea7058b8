#!/usr/bin/env bash
# Runs `valet check` over a folder of pipeline files kept outside this repository (for
# example the Jenkins Kubernetes plugin's examples and tests) and reports how many are
# accepted, split into scripted and declarative, and every refusal with its first error.
#
#   scripts/corpus-check.sh DIR [VALET]
set -uo pipefail
dir=${1:?usage: corpus-check.sh DIR [VALET]}
valet=${2:-./target/debug/valet}
scripted_ok=0 scripted_all=0 decl_ok=0 decl_all=0
refusals=""
while IFS= read -r -d '' f; do
    if grep -qE '^\s*pipeline\s*\{' "$f"; then kind=declarative; else kind=scripted; fi
    if out=$("$valet" check -q "$f" 2>&1); then
        ok=1
    else
        ok=0
        first=$(printf '%s\n' "$out" | grep -m1 -A1 '^error' | tr '\n' ' ')
        refusals+="  [$kind] $(basename "$f"): $first"$'\n'
    fi
    if [ $kind = scripted ]; then
        scripted_all=$((scripted_all + 1)); scripted_ok=$((scripted_ok + ok))
    else
        decl_all=$((decl_all + 1)); decl_ok=$((decl_ok + ok))
    fi
done < <(find "$dir" -type f \( -name '*.groovy' -o -name 'Jenkinsfile*' \) -print0 | sort -z)
pct() { [ "$2" -gt 0 ] && echo "$(( 1000 * $1 / $2 / 10 )).$(( 1000 * $1 / $2 % 10 ))%" || echo "n/a"; }
echo "scripted:    $scripted_ok of $scripted_all accepted ($(pct $scripted_ok $scripted_all))"
echo "declarative: $decl_ok of $decl_all accepted ($(pct $decl_ok $decl_all))"
if [ -n "$refusals" ]; then
    echo "refusals:"
    printf '%s' "$refusals"
fi
