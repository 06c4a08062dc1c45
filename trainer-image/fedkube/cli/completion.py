"""`fedkube completion bash`: a completion script for bash (and zsh, through bashcompinit),
made from the command line's own parsers, so it offers every command and flag there is.

    source <(fedkube completion bash)          # in ~/.bashrc
    autoload -U bashcompinit && bashcompinit   # zsh, then the line above
"""

from __future__ import annotations

import argparse
import shlex

from fedkube.cli.help_examples import subcommands

SCRIPT = """# fedkube completion for bash; zsh: autoload -U bashcompinit && bashcompinit first
_fedkube() {
  local cur word known i key=""
  cur="${COMP_WORDS[COMP_CWORD]}"
  # The subcommand typed so far ("certs sign"): the words that name one, in order.
  for ((i = 1; i < COMP_CWORD; i++)); do
    word="${COMP_WORDS[i]}"
    for known in $(_fedkube_words "$key"); do
      if [ "$known" = "$word" ]; then key="${key:+$key }$word"; break; fi
    done
  done
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$(_fedkube_flags "$key")" -- "$cur"))
  else
    COMPREPLY=($(compgen -W "$(_fedkube_words "$key")" -- "$cur"))
    [ ${#COMPREPLY[@]} -eq 0 ] && COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
_fedkube_words() {
  case "$1" in
%(words)s
  esac
}
_fedkube_flags() {
  case "$1" in
%(flags)s
  esac
}
complete -F _fedkube fedkube
"""


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(s for a in parser._actions for s in a.option_strings if s.startswith("--"))


def _children(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(
        name
        for a in parser._actions
        if isinstance(a, argparse._SubParsersAction)
        for name in a.choices
    )


def bash_script(parser: argparse.ArgumentParser) -> str:
    parsers = {"": parser, **subcommands(parser)}

    def case(key: str, values: list[str]) -> str:
        return f"    {shlex.quote(key)}) echo {shlex.quote(' '.join(values))} ;;"

    words = [case(k, _children(p)) for k, p in parsers.items() if _children(p)]
    flags = [case(k, _flags(p)) for k, p in parsers.items()]
    return SCRIPT % {"words": "\n".join(words), "flags": "\n".join(flags)}


def cmd_completion(args: argparse.Namespace) -> int:
    print(bash_script(args.root_parser), end="")
    return 0


def completion_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "completion", help="a shell completion script (bash; zsh through bashcompinit)"
    )
    p.add_argument("shell", choices=["bash", "zsh"], help="zsh: load bashcompinit first")
    p.set_defaults(fn=cmd_completion)
