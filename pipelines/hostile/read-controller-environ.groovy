// A step that looks for the credentials of the valet process running it: its parent's
// environment, the valet process's (found up the process tree), its memory map, and its own
// environment. It must find no VALET_SECRET_* value and nothing of the controller's
// environment: valet takes those variables out of its environment at start, overwrites
// them in memory, and cannot be read by other users (non-dumpable); on `valet serve` as
// root, local steps run as an unprivileged user, with an environment of their own.
node {
    sh '''
        echo "step user: $(id -u)"
        echo "--- parent $PPID"
        tr '\\0' '\\n' < /proc/$PPID/environ || echo "parent environ: not readable"
        p=$PPID
        while [ "$p" -gt 1 ] && [ "$(cat /proc/$p/comm 2>/dev/null)" != valet ]; do
            p=$(sed -n 's/^PPid:[[:space:]]*//p' /proc/$p/status)
        done
        echo "valet process: $p"
        tr '\\0' '\\n' < /proc/$p/environ || echo "valet environ: not readable"
        cat /proc/$p/maps >/dev/null 2>&1 && echo "valet memory map: readable" || echo "valet memory map: not readable"
        echo "--- own environment"
        env
    '''
}
