# bash completion for resin-lock. Generated from the CLI definition by
# `cargo xtask gen` (xtask/src/generate.rs); edit that, not this file.

# _resin_lock_options SUB: the options of subcommand SUB (none yet: "").
_resin_lock_options() {
    case $1 in
        acquire) echo "-v --verbose -q --quiet --path --root -n --nonblock -w --timeout -E --conflict-exit-code -s --shared --reason --max-hold --tag --tag-after --owner -h --help -V --version" ;;
        release) echo "-v --verbose -q --quiet --path --root -f --force --owner --update-now -h --help -V --version" ;;
        run) echo "-v --verbose -q --quiet --path --root -n --nonblock -w --timeout -E --conflict-exit-code -s --shared --reason --max-hold --tag --tag-after -g --group --on-lost --update-now -h --help -V --version" ;;
        status) echo "-v --verbose -q --quiet --path --root --supervisor --host --health --max-hold --json -h --help -V --version" ;;
        hold) echo "-v --verbose -q --quiet --path --root -n --nonblock -w --timeout -E --conflict-exit-code -s --shared --reason --max-hold --tag --tag-after -h --help -V --version" ;;
        force-update) echo "-v --verbose -q --quiet -h --help -V --version" ;;
        help) echo "" ;;
        *) echo "-v --verbose -q --quiet --path --root -h --help -V --version" ;;
    esac
}

# _resin_lock_value SUB WORD: fails unless WORD is an option of SUB that
# takes the next word as its value; then says what to offer for it: files,
# dirs, commands, "words W...", or none (no file names either).
_resin_lock_value() {
    case $1 in
        acquire)
            case $2 in
                --path) echo files ;;
                --root) echo dirs ;;
                --timeout | -w | -[!-]*w) echo none ;;
                --conflict-exit-code | -E | -[!-]*E) echo none ;;
                --reason) echo none ;;
                --max-hold) echo none ;;
                --tag-after) echo none ;;
                --owner) echo none ;;
                *) return 1 ;;
            esac ;;
        release)
            case $2 in
                --path) echo files ;;
                --root) echo dirs ;;
                --owner) echo none ;;
                *) return 1 ;;
            esac ;;
        run)
            case $2 in
                --path) echo files ;;
                --root) echo dirs ;;
                --timeout | -w | -[!-]*w) echo none ;;
                --conflict-exit-code | -E | -[!-]*E) echo none ;;
                --reason) echo none ;;
                --max-hold) echo none ;;
                --tag-after) echo none ;;
                --on-lost) echo words TERM INT HUP QUIT USR1 USR2 ALRM WINCH KILL RTMIN RTMIN+1 RTMIN+2 RTMIN+3 RTMIN+4 RTMIN+5 RTMIN+6 RTMIN+7 RTMIN+8 RTMIN+9 RTMIN+10 RTMIN+11 RTMIN+12 RTMIN+13 RTMIN+14 RTMIN+15 RTMAX-14 RTMAX-13 RTMAX-12 RTMAX-11 RTMAX-10 RTMAX-9 RTMAX-8 RTMAX-7 RTMAX-6 RTMAX-5 RTMAX-4 RTMAX-3 RTMAX-2 RTMAX-1 RTMAX ;;
                *) return 1 ;;
            esac ;;
        status)
            case $2 in
                --path) echo files ;;
                --root) echo dirs ;;
                --max-hold) echo none ;;
                *) return 1 ;;
            esac ;;
        hold)
            case $2 in
                --path) echo files ;;
                --root) echo dirs ;;
                --timeout | -w | -[!-]*w) echo none ;;
                --conflict-exit-code | -E | -[!-]*E) echo none ;;
                --reason) echo none ;;
                --max-hold) echo none ;;
                --tag-after) echo none ;;
                *) return 1 ;;
            esac ;;
        force-update)
            case $2 in
                *) return 1 ;;
            esac ;;
        help)
            case $2 in
                *) return 1 ;;
            esac ;;
        *)
            case $2 in
                --path) echo files ;;
                --root) echo dirs ;;
                *) return 1 ;;
            esac ;;
    esac
}

# _resin_lock_takes_command SUB: whether SUB's arguments are a command line.
_resin_lock_takes_command() {
    case $1 in
        run) return 0 ;;
    esac
    return 1
}

_resin_lock_files() {
    compopt -o filenames 2>/dev/null
    mapfile -t COMPREPLY < <(compgen -f -- "$1")
}

_resin_lock_dirs() {
    compopt -o filenames 2>/dev/null
    mapfile -t COMPREPLY < <(compgen -d -- "$1")
}

# A command name, or a path to one.
_resin_lock_commands() {
    if [[ $1 == */* ]]; then
        _resin_lock_files "$1"
    else
        mapfile -t COMPREPLY < <(compgen -c -- "$1" | sort -u)
    fi
}

_resin_lock() {
    local cur=${COMP_WORDS[COMP_CWORD]} opt=${COMP_WORDS[COMP_CWORD - 1]}
    local sub="" word kind i=1 cmd_at=0
    COMPREPLY=()
    # The words before the cursor: the subcommand, the options and their
    # values, and where the command of `run` begins (at `--` or at the first
    # word that is not an option).
    while ((i < COMP_CWORD)); do
        word=${COMP_WORDS[i]}
        if [[ $word == -- ]]; then
            if _resin_lock_takes_command "$sub"; then
                cmd_at=$((i + 1))
                break
            fi
        elif [[ $word == -?* ]]; then
            if _resin_lock_value "$sub" "$word" >/dev/null; then
                i=$((i + 1))
                # `--option=value`, which bash splits at the "=".
                [[ ${COMP_WORDS[i]} == = ]] && i=$((i + 1))
            fi
        elif [[ -z $sub ]]; then
            sub=$word
        elif _resin_lock_takes_command "$sub"; then
            cmd_at=$i
            break
        fi
        i=$((i + 1))
    done

    if ((cmd_at)); then
        if ((cmd_at == COMP_CWORD)); then
            _resin_lock_commands "$cur"
        elif declare -F _command_offset >/dev/null; then
            # bash-completion: complete the command's own arguments.
            _command_offset "$cmd_at"
        else
            _resin_lock_files "$cur"
        fi
        return 0
    fi

    # The value of an option, also right after `--option=`.
    if [[ $cur == = ]]; then
        cur=""
    elif [[ $opt == = ]] && ((COMP_CWORD >= 2)); then
        opt=${COMP_WORDS[COMP_CWORD - 2]}
    fi
    if kind=$(_resin_lock_value "$sub" "$opt"); then
        case $kind in
            files) _resin_lock_files "$cur" ;;
            dirs) _resin_lock_dirs "$cur" ;;
            commands) _resin_lock_commands "$cur" ;;
            words\ *) COMPREPLY=($(compgen -W "${kind#words }" -- "$cur")) ;;
        esac
        return 0
    fi

    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_resin_lock_options "$sub")" -- "$cur"))
    elif [[ -z $sub ]]; then
        COMPREPLY=($(compgen -W "acquire release run status hold force-update help" -- "$cur"))
    elif _resin_lock_takes_command "$sub"; then
        _resin_lock_commands "$cur"
    else
        case $sub in
        help) COMPREPLY=($(compgen -W "acquire release run status hold force-update help" -- "$2")) ;;
        esac
    fi
    return 0
}

# No -o default: the function offers file names itself where they fit, so
# nothing falls back to them where they do not (a pid, a duration).
complete -F _resin_lock resin-lock
