#!/usr/bin/env bash
# Writes the shell completion scripts the packages and archives carry to
# completions/, from `spritefwd completion SHELL` (of the binary given, or
# of go run ./cmd/spritefwd).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf completions && mkdir completions
if [ $# -gt 0 ]; then run=("$1"); else run=("${GO:-go}" run ./cmd/spritefwd); fi
# Named as each shell looks them up: Homebrew and the packages keep the names.
"${run[@]}" completion bash >completions/spritefwd
"${run[@]}" completion zsh >completions/_spritefwd
"${run[@]}" completion fish >completions/spritefwd.fish
