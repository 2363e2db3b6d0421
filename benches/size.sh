#!/usr/bin/env bash
# The stripped binary's size by cargo feature (SPEC 1 to 8 alone, then each
# optional part on top of it, then all of them), in the `small` profile
# (`opt-level = "z"`, the smallest) and the `dist` profile (the shipped
# build):
#
#   benches/size.sh             # the table
#   PROFILES=small benches/size.sh
#
# Each row is `cargo build --profile P --bin ackloop --no-default-features
# --features PARTS`; the cost of a part is its row minus the core's. The
# last build is the default one, so target/P/ackloop is left as usual.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

PROFILES=${PROFILES:-small dist}
ALL=cli,relay,scripts,journal,control,api
printf '| features | %s |\n' "$(sed 's/ / | /g' <<<"$PROFILES")"
printf '|---|%s\n' "$(for _ in $PROFILES; do printf -- '---|'; done)"
declare -A core
for parts in cli cli,relay cli,scripts cli,journal cli,control cli,api $ALL; do
    row="| \`$parts\` |"
    for profile in $PROFILES; do
        cargo build --profile "$profile" --quiet --bin ackloop --no-default-features --features "$parts"
        strip -o "target/ackloop.$profile.size" "target/$profile/ackloop"
        bytes=$(stat -c %s "target/ackloop.$profile.size")
        if [[ $parts == cli ]]; then
            core[$profile]=$bytes
            row+=" $bytes |"
        else
            row+=" $bytes (+$((bytes - core[$profile]))) |"
        fi
    done
    echo "$row"
done
rm -f target/ackloop.*.size
