// Recursion past what any real pipeline needs: the build ends with an error naming the
// limit; the process that runs it (valet run, or the controller with its other builds) lives on.
def f(n) { if (n <= 0) { return 0 }; return f(n - 1) + 1 }
node {
    echo "depth ${f(100000)}"
}
