// Output far past the controller's `step_log_limit`: the step's log and the event stream
// keep the cap and one marker line; the rest is dropped as it arrives, not held.
node {
    sh 'yes "0123456789 abcdefghij klmnopqrst uvwxyz" | head -c 4194304'
    echo 'after the flood'
}
