package main

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spritefwd/spritefwd/config"
)

const completionHelp = `spritefwd completion bash|zsh|fish: print a shell completion script.

  bash: spritefwd completion bash > ~/.local/share/bash-completion/completions/spritefwd
  zsh:  spritefwd completion zsh > "${fpath[1]}/_spritefwd"   (or: source <(spritefwd completion zsh))
  fish: spritefwd completion fish > ~/.config/fish/completions/spritefwd.fish
The packages install all three. The scripts ask spritefwd itself what to
offer (completion --words), so they complete the commands and flags of the
spritefwd you run, and the names of the forwards and sprites in the config
file (--config FILE if the line has one, else the default).`

// argKind is what a command's positional argument is, for completion.
type argKind int

const (
	argNone    argKind = iota
	argFile            // a file name: the shell completes it
	argForward         // the name of a configured forward
	argSprite          // the sprite of a configured forward
	argAction          // service's action
)

// positionals names what each command's positional arguments are, in
// order; a command not listed here completes its flags only. Flags and
// commands need no entry: they come from commands() and the FlagSets.
func positionals() map[string][]argKind {
	return map[string][]argKind{
		"forward":    {argSprite},
		"validate":   {argFile},
		"service":    {argAction},
		"completion": {argNone},
	}
}

func cmdCompletion(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("completion", completionHelp, stderr)
	words := fs.Bool("words", false, "print what to offer for the last of the words after -- (spritefwd's own arguments, as typed so far); the scripts call this")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *words {
		c := completer{commands: commands(), positionals: positionals()}
		files, cands := c.complete(fs.Args())
		fmt.Fprintln(stdout, map[bool]string{true: "files", false: "words"}[files])
		for _, w := range cands {
			fmt.Fprintln(stdout, w)
		}
		return nil
	}
	script := map[string]string{"bash": bashCompletion, "zsh": zshCompletion, "fish": fishCompletion}[fs.Arg(0)]
	if fs.NArg() != 1 || script == "" {
		return &exitError{code: 2, msg: "completion: want one of bash, zsh or fish"}
	}
	fmt.Fprint(stdout, script)
	return nil
}

// completer finds what to offer from a command table.
type completer struct {
	commands    []command
	positionals map[string][]argKind
}

// complete returns the candidates for the last of words (spritefwd's
// arguments, the last being the word under the cursor, perhaps ""), each
// starting with it; or files, when the shell should complete a file name.
func (c completer) complete(words []string) (files bool, cands []string) {
	if len(words) == 0 {
		words = []string{""}
	}
	cur := words[len(words)-1]
	if len(words) == 1 {
		for _, cmd := range c.commands {
			cands = append(cands, cmd.name)
		}
		return false, withPrefix(cands, cur)
	}
	i := slices.IndexFunc(c.commands, func(cmd command) bool { return cmd.name == words[0] })
	if i < 0 {
		return false, nil
	}
	flags := commandFlags(c.commands[i])
	takesValue := func(w string) bool {
		name := strings.TrimLeft(w, "-")
		f := flags[name]
		if !strings.HasPrefix(w, "-") || strings.Contains(name, "=") || f == nil {
			return false
		}
		b, ok := f.Value.(interface{ IsBoolFlag() bool })
		return !ok || !b.IsBoolFlag()
	}
	// Walk the words before cur: flags, their values, positionals.
	var pos []string
	configPath := ""
	args := words[1 : len(words)-1]
	for j := 0; j < len(args); j++ {
		w := args[j]
		switch {
		case w == "--":
			pos = append(pos, args[j+1:]...)
			j = len(args)
		case takesValue(w) && j+1 < len(args):
			if args[j+1] == "=" && j+2 < len(args) { // bash splits --config=FILE at the =
				j++
			}
			if strings.TrimLeft(w, "-") == "config" {
				configPath = args[j+1]
			}
			j++
		case strings.HasPrefix(w, "-config=") || strings.HasPrefix(w, "--config="):
			_, configPath, _ = strings.Cut(w, "=")
		case strings.HasPrefix(w, "-") && w != "-":
		default:
			pos = append(pos, w)
		}
	}
	valueNext := len(args) > 0 && takesValue(args[len(args)-1]) ||
		len(args) > 1 && args[len(args)-1] == "=" && takesValue(args[len(args)-2])
	if valueNext || strings.HasPrefix(cur, "-") && strings.Contains(cur, "=") {
		return true, nil // a flag's value: a file name more often than not
	}
	if strings.HasPrefix(cur, "-") {
		for name := range flags {
			cands = append(cands, map[bool]string{true: "-", false: "--"}[len(name) == 1]+name)
		}
		slices.Sort(cands)
		return false, withPrefix(cands, cur)
	}
	kinds := c.positionals[words[0]]
	kind := argNone
	if len(pos) < len(kinds) {
		kind = kinds[len(pos)]
	}
	switch kind {
	case argFile:
		return true, nil
	case argAction:
		return false, withPrefix([]string{"install", "uninstall", "start", "stop", "restart", "status"}, cur)
	case argForward, argSprite:
		if configPath == "" {
			configPath = config.DefaultPath()
		}
		// A config with an error still names its forwards.
		cfg, _ := config.Load(config.ExpandHome(configPath))
		if cfg == nil {
			return false, nil
		}
		for _, f := range cfg.Forwards {
			cands = append(cands, map[bool]string{true: f.Name, false: f.Sprite}[kind == argForward])
		}
		slices.Sort(cands)
		return false, withPrefix(slices.Compact(cands), cur)
	}
	return false, nil
}

func withPrefix(words []string, prefix string) []string {
	var out []string
	for _, w := range words {
		if strings.HasPrefix(w, prefix) {
			out = append(out, w)
		}
	}
	return out
}

// commandFlags returns the flags cmd registers, by name: it runs cmd with
// --help, which parses no further, and collects the FlagSets made through
// newFlags, as TestHelp does. service registers its flags per action, the
// same for each.
func commandFlags(cmd command) map[string]*flag.Flag {
	args := []string{"--help"}
	if cmd.name == "service" {
		args = []string{"install", "--help"}
	}
	var fc flagCollector
	cmd.run(args, &fc, &fc)
	flags := map[string]*flag.Flag{}
	for _, fs := range fc.sets {
		fs.VisitAll(func(f *flag.Flag) { flags[f.Name] = f })
	}
	return flags
}

// flagCollector discards a command's help and keeps its FlagSets.
type flagCollector struct{ sets []*flag.FlagSet }

func (c *flagCollector) Write(p []byte) (int, error) { return len(p), nil }
func (c *flagCollector) observe(fs *flag.FlagSet)    { c.sets = append(c.sets, fs) }

// The scripts are thin: each passes the words typed so far to
// `spritefwd completion --words` and offers what it prints, or file names
// when its first line says "files".
const bashCompletion = `# bash completion for spritefwd (spritefwd completion bash)
_spritefwd() {
    local prog=${COMP_WORDS[0]} IFS=$'\n' reply
    [[ $prog == "~"* ]] && prog=spritefwd
    reply=($("$prog" completion --words -- "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null)) || return 0
    COMPREPLY=()
    if [[ ${reply[0]} == files ]]; then
        compopt -o default 2>/dev/null || : # an empty reply: readline completes file names
    else
        COMPREPLY=("${reply[@]:1}")
    fi
}
complete -F _spritefwd spritefwd
`

const zshCompletion = `#compdef spritefwd
# zsh completion for spritefwd (spritefwd completion zsh)
_spritefwd() {
    local -a reply
    reply=("${(@f)$(${words[1]} completion --words -- "${(@)words[2,CURRENT]}" 2>/dev/null)}")
    if [[ ${reply[1]} == files ]]; then
        _files
    elif (( ${#reply} > 1 )); then
        compadd -- "${(@)reply[2,-1]}"
    fi
}
if [[ ${funcstack[1]} == _spritefwd ]]; then
    _spritefwd "$@" # autoloaded from $fpath
else
    compdef _spritefwd spritefwd # sourced
fi
`

const fishCompletion = `# fish completion for spritefwd (spritefwd completion fish)
function __spritefwd_complete
    set -l before (commandline -opc)
    set -l cur (commandline -ct)
    set -l reply ($before[1] completion --words -- $before[2..-1] "$cur" 2>/dev/null)
    if test "$reply[1]" = files
        __fish_complete_path "$cur"
    else
        printf '%s\n' $reply[2..-1]
    end
end
complete -c spritefwd -f -a '(__spritefwd_complete)'
`
