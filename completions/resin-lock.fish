# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_resin_lock_global_optspecs
    string join \n v/verbose q/quiet path= root= h/help V/version
end

function __fish_resin_lock_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_resin_lock_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_resin_lock_using_subcommand
    set -l cmd (__fish_resin_lock_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c resin-lock -n "__fish_resin_lock_needs_command" -l path -d 'Use this lock file, not the detected one (repeatable)' -r -F
complete -c resin-lock -n "__fish_resin_lock_needs_command" -l root -d 'Resolve detected lock paths and files under DIR' -r -f -a "(__fish_complete_directories)"
complete -c resin-lock -n "__fish_resin_lock_needs_command" -s v -l verbose -d 'Say what was done and why'
complete -c resin-lock -n "__fish_resin_lock_needs_command" -s q -l quiet -d 'Print nothing but errors'
complete -c resin-lock -n "__fish_resin_lock_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c resin-lock -n "__fish_resin_lock_needs_command" -s V -l version -d 'Print version'
complete -c resin-lock -n "__fish_resin_lock_needs_command" -f -a "acquire" -d 'Take the update lock and keep it after this command returns, until `release`'
complete -c resin-lock -n "__fish_resin_lock_needs_command" -f -a "release" -d 'Give the lock back'
complete -c resin-lock -n "__fish_resin_lock_needs_command" -f -a "run" -d 'Take the lock, run CMD, release the lock when CMD ends, exit as CMD did'
complete -c resin-lock -n "__fish_resin_lock_needs_command" -f -a "status" -d 'Report every lock path, its holder, and how the paths were chosen'
complete -c resin-lock -n "__fish_resin_lock_needs_command" -f -a "hold" -d 'Hold the lock while stdin stays open; say what happens in JSON lines'
complete -c resin-lock -n "__fish_resin_lock_needs_command" -f -a "force-update" -d 'Ask the supervisor to update now, overriding update locks'
complete -c resin-lock -n "__fish_resin_lock_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand acquire" -l path -d 'Use this lock file, not the detected one (repeatable)' -r -F
complete -c resin-lock -n "__fish_resin_lock_using_subcommand acquire" -l root -d 'Resolve detected lock paths and files under DIR' -r -f -a "(__fish_complete_directories)"
complete -c resin-lock -n "__fish_resin_lock_using_subcommand acquire" -s w -l timeout -d 'Give up after DUR (seconds, or 250ms, 30s, 5m, 1h)' -r -f
complete -c resin-lock -n "__fish_resin_lock_using_subcommand acquire" -s E -l conflict-exit-code -d 'Exit with CODE, not 1, when busy (-n) or timed out (-w)' -r -f
complete -c resin-lock -n "__fish_resin_lock_using_subcommand acquire" -l reason -d 'Why the lock is held (shown by status, -v and waiters)' -r -f
complete -c resin-lock -n "__fish_resin_lock_using_subcommand acquire" -l max-hold -d 'Let go of the lock after DUR even if the work goes on' -r -f
complete -c resin-lock -n "__fish_resin_lock_using_subcommand acquire" -l tag-after -d 'With tags on, publish holds that last DUR (default 30s)' -r -f
complete -c resin-lock -n "__fish_resin_lock_using_subcommand acquire" -l owner -d 'Keep the lock while process PID lives; `parent`: exactly the parent (default: the nearest ancestor that is not a transient wrapper)' -r -f
complete -c resin-lock -n "__fish_resin_lock_using_subcommand acquire" -s v -l verbose -d 'Say what was done and why'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand acquire" -s q -l quiet -d 'Print nothing but errors'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand acquire" -s n -l nonblock -d 'Fail at once if the lock is busy instead of waiting'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand acquire" -s s -l shared -d 'Share the lock (LOCK_SH); the last holder out removes it'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand acquire" -l tag -d 'Show a long hold as a device tag in balenaCloud'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand acquire" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand acquire" -s V -l version -d 'Print version'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand release" -l path -d 'Use this lock file, not the detected one (repeatable)' -r -F
complete -c resin-lock -n "__fish_resin_lock_using_subcommand release" -l root -d 'Resolve detected lock paths and files under DIR' -r -f -a "(__fish_complete_directories)"
complete -c resin-lock -n "__fish_resin_lock_using_subcommand release" -l owner -d 'Release the lock of owner PID (an ancestor of the caller always counts)' -r -f
complete -c resin-lock -n "__fish_resin_lock_using_subcommand release" -s v -l verbose -d 'Say what was done and why'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand release" -s q -l quiet -d 'Print nothing but errors'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand release" -s f -l force -d 'Also remove someone else\'s acquire lock, foreign locks and locks held by a running `resin-lock run`'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand release" -l update-now -d 'After release, ask the supervisor to apply a pending update now'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand release" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand release" -s V -l version -d 'Print version'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand run; and not __fish_resin_lock_run_past_options" -l path -d 'Use this lock file, not the detected one (repeatable)' -r -F
complete -c resin-lock -n "__fish_resin_lock_using_subcommand run; and not __fish_resin_lock_run_past_options" -l root -d 'Resolve detected lock paths and files under DIR' -r -f -a "(__fish_complete_directories)"
complete -c resin-lock -n "__fish_resin_lock_using_subcommand run; and not __fish_resin_lock_run_past_options" -s w -l timeout -d 'Give up after DUR (seconds, or 250ms, 30s, 5m, 1h)' -r -f
complete -c resin-lock -n "__fish_resin_lock_using_subcommand run; and not __fish_resin_lock_run_past_options" -s E -l conflict-exit-code -d 'Exit with CODE, not 1, when busy (-n) or timed out (-w)' -r -f
complete -c resin-lock -n "__fish_resin_lock_using_subcommand run; and not __fish_resin_lock_run_past_options" -l reason -d 'Why the lock is held (shown by status, -v and waiters)' -r -f
complete -c resin-lock -n "__fish_resin_lock_using_subcommand run; and not __fish_resin_lock_run_past_options" -l max-hold -d 'Let go of the lock after DUR even if the work goes on' -r -f
complete -c resin-lock -n "__fish_resin_lock_using_subcommand run; and not __fish_resin_lock_run_past_options" -l tag-after -d 'With tags on, publish holds that last DUR (default 30s)' -r -f
complete -c resin-lock -n "__fish_resin_lock_using_subcommand run; and not __fish_resin_lock_run_past_options" -l on-lost -d 'Send SIGNAL to CMD if its lock file is removed under it' -r -f -a "TERM\t''
INT\t''
HUP\t''
QUIT\t''
USR1\t''
USR2\t''
ALRM\t''
WINCH\t''
KILL\t''
RTMIN\t''
RTMIN+1\t''
RTMIN+2\t''
RTMIN+3\t''
RTMIN+4\t''
RTMIN+5\t''
RTMIN+6\t''
RTMIN+7\t''
RTMIN+8\t''
RTMIN+9\t''
RTMIN+10\t''
RTMIN+11\t''
RTMIN+12\t''
RTMIN+13\t''
RTMIN+14\t''
RTMIN+15\t''
RTMAX-14\t''
RTMAX-13\t''
RTMAX-12\t''
RTMAX-11\t''
RTMAX-10\t''
RTMAX-9\t''
RTMAX-8\t''
RTMAX-7\t''
RTMAX-6\t''
RTMAX-5\t''
RTMAX-4\t''
RTMAX-3\t''
RTMAX-2\t''
RTMAX-1\t''
RTMAX\t''"
complete -c resin-lock -n "__fish_resin_lock_using_subcommand run; and not __fish_resin_lock_run_past_options" -s v -l verbose -d 'Say what was done and why'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand run; and not __fish_resin_lock_run_past_options" -s q -l quiet -d 'Print nothing but errors'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand run; and not __fish_resin_lock_run_past_options" -s n -l nonblock -d 'Fail at once if the lock is busy instead of waiting'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand run; and not __fish_resin_lock_run_past_options" -s s -l shared -d 'Share the lock (LOCK_SH); the last holder out removes it'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand run; and not __fish_resin_lock_run_past_options" -l tag -d 'Show a long hold as a device tag in balenaCloud'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand run; and not __fish_resin_lock_run_past_options" -s g -l group -d 'Run CMD in its own process group; signal the whole group'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand run; and not __fish_resin_lock_run_past_options" -l update-now -d 'After release, ask the supervisor to apply a pending update now'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand run; and not __fish_resin_lock_run_past_options" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand run; and not __fish_resin_lock_run_past_options" -s V -l version -d 'Print version'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand status" -l path -d 'Use this lock file, not the detected one (repeatable)' -r -F
complete -c resin-lock -n "__fish_resin_lock_using_subcommand status" -l root -d 'Resolve detected lock paths and files under DIR' -r -f -a "(__fish_complete_directories)"
complete -c resin-lock -n "__fish_resin_lock_using_subcommand status" -l max-hold -d 'With --health: a lock held longer than DUR is unhealthy too' -r -f
complete -c resin-lock -n "__fish_resin_lock_using_subcommand status" -s v -l verbose -d 'Say what was done and why'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand status" -s q -l quiet -d 'Print nothing but errors'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand status" -l supervisor -d 'Also ask the supervisor API whether an update is pending'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand status" -l host -d 'From the balenaOS host: every app\'s locks under /tmp/balena-supervisor/services'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand status" -l health -d 'For a Docker HEALTHCHECK: exit 1 only when a lock blocks updates for nothing'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand status" -l json -d 'Print one JSON object instead of text'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand status" -s V -l version -d 'Print version'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand hold" -l path -d 'Use this lock file, not the detected one (repeatable)' -r -F
complete -c resin-lock -n "__fish_resin_lock_using_subcommand hold" -l root -d 'Resolve detected lock paths and files under DIR' -r -f -a "(__fish_complete_directories)"
complete -c resin-lock -n "__fish_resin_lock_using_subcommand hold" -s w -l timeout -d 'Give up after DUR (seconds, or 250ms, 30s, 5m, 1h)' -r -f
complete -c resin-lock -n "__fish_resin_lock_using_subcommand hold" -s E -l conflict-exit-code -d 'Exit with CODE, not 1, when busy (-n) or timed out (-w)' -r -f
complete -c resin-lock -n "__fish_resin_lock_using_subcommand hold" -l reason -d 'Why the lock is held (shown by status, -v and waiters)' -r -f
complete -c resin-lock -n "__fish_resin_lock_using_subcommand hold" -l max-hold -d 'Let go of the lock after DUR even if the work goes on' -r -f
complete -c resin-lock -n "__fish_resin_lock_using_subcommand hold" -l tag-after -d 'With tags on, publish holds that last DUR (default 30s)' -r -f
complete -c resin-lock -n "__fish_resin_lock_using_subcommand hold" -s v -l verbose -d 'Say what was done and why'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand hold" -s q -l quiet -d 'Print nothing but errors'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand hold" -s n -l nonblock -d 'Fail at once if the lock is busy instead of waiting'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand hold" -s s -l shared -d 'Share the lock (LOCK_SH); the last holder out removes it'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand hold" -l tag -d 'Show a long hold as a device tag in balenaCloud'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand hold" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand hold" -s V -l version -d 'Print version'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand force-update" -s v -l verbose -d 'Say what was done and why'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand force-update" -s q -l quiet -d 'Print nothing but errors'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand force-update" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand force-update" -s V -l version -d 'Print version'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand help; and not __fish_seen_subcommand_from acquire release run status hold force-update help" -f -a "acquire" -d 'Take the update lock and keep it after this command returns, until `release`'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand help; and not __fish_seen_subcommand_from acquire release run status hold force-update help" -f -a "release" -d 'Give the lock back'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand help; and not __fish_seen_subcommand_from acquire release run status hold force-update help" -f -a "run" -d 'Take the lock, run CMD, release the lock when CMD ends, exit as CMD did'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand help; and not __fish_seen_subcommand_from acquire release run status hold force-update help" -f -a "status" -d 'Report every lock path, its holder, and how the paths were chosen'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand help; and not __fish_seen_subcommand_from acquire release run status hold force-update help" -f -a "hold" -d 'Hold the lock while stdin stays open; say what happens in JSON lines'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand help; and not __fish_seen_subcommand_from acquire release run status hold force-update help" -f -a "force-update" -d 'Ask the supervisor to update now, overriding update locks'
complete -c resin-lock -n "__fish_resin_lock_using_subcommand help; and not __fish_seen_subcommand_from acquire release run status hold force-update help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'

# run: the words after its options (from `--`, or from the first word that
# is not an option) are a command line of their own, completed as such.
# Written by xtask/src/generate.rs: clap_complete's fish script has no
# positional arguments.
function __fish_resin_lock_run_optspecs
    string join \n v/verbose q/quiet path=+ root= n/nonblock w/timeout= E/conflict-exit-code= s/shared reason= max-hold= tag tag-after= g/group on-lost= update-now h/help V/version
end

# The words of the command line of `run` before the cursor, one a line;
# fails before it can begin (e.g. while an option waits for its value).
function __fish_resin_lock_run_words
    set -l words (commandline -opc)
    set -e words[1]
    argparse -s (__fish_resin_lock_global_optspecs) -- $words 2>/dev/null
    or return 1
    test "$argv[1]" = run
    or return 1
    set -e argv[1]
    argparse -s (__fish_resin_lock_run_optspecs) -- $argv 2>/dev/null
    or return 1
    string join \n -- $argv
    return 0
end

function __fish_resin_lock_run_at_command
    set -l words (__fish_resin_lock_run_words)
    or return 1
    test (count $words) -eq 0
end

function __fish_resin_lock_run_in_command
    set -l words (__fish_resin_lock_run_words)
    or return 1
    test (count $words) -gt 0
end

# Past `--`, or inside the command line: no more options of run.
function __fish_resin_lock_run_past_options
    contains -- -- (commandline -opc)
    or __fish_resin_lock_run_in_command
end

function __fish_resin_lock_run_complete_command
    set -l words (__fish_resin_lock_run_words)
    complete -C (string join ' ' -- (string escape -- $words) (commandline -ct))
end

complete -c resin-lock -n "__fish_resin_lock_run_at_command" -f -a "(__fish_complete_command)"
complete -c resin-lock -n "__fish_resin_lock_run_in_command" -f -a "(__fish_resin_lock_run_complete_command)"
