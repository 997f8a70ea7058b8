// expect: syntax error at 8:5: `else` without a matching `if` (the `if` at 4:5 is followed by the `echo` on line 7)
node('linux') {
    def branch = env.BRANCH_NAME ?: 'main'
    if (branch == 'main') {
        sh './deploy.sh production'
    }
    echo "branch is ${branch}"
    else {
        sh './deploy.sh preview'
    }
}
