# Shared by the bench scripts (sourced): the machine's load, and replacing a script's own section
# of results.md.

# Other work on the machine shows in the results: load average and CPU pressure (share of time
# runnable tasks waited for a core).
busy() { echo "load average $(cut -d' ' -f1-3 /proc/loadavg), CPU pressure $(sed -n 's/^some //p' /proc/pressure/cpu 2>/dev/null || echo n/a)"; }

# replace_section NAME FILE SECTION: put SECTION in FILE between the `<!-- NAME: begin -->` and
# `<!-- NAME: end -->` markers (SECTION carries them), replacing what was there; appended when
# FILE has no such section yet.
replace_section() {
  local name="$1" file="$2" section="$3" work
  work="$(mktemp -d /tmp/rig-bench-section.XXXXXX)"
  printf '%s\n' "$section" >"$work/section.md"
  if grep -q "<!-- $name: begin -->" "$file" 2>/dev/null; then
    awk -v f="$work/section.md" -v b="<!-- $name: begin -->" -v e="<!-- $name: end -->" \
      'BEGIN {while ((getline l < f) > 0) s = s l "\n"}
      $0 == b {printf "%s", s; skip = 1; next}
      $0 == e {skip = 0; next}
      !skip' "$file" >"$work/results.md"
    cp "$work/results.md" "$file"
  else
    { echo; printf '%s\n' "$section"; } >>"$file"
  fi
  rm -rf "$work"
}
