//! A human name for every grammar rule, used in "expected …" messages.
//!
//! The match is exhaustive on purpose: a rule added to `grammar/pipeline.pest` without a
//! name here does not compile, and `tests::every_rule_has_a_human_name` checks that no
//! name leaks a rule identifier.

use crate::parser::Rule;

/// What a person calls the thing that `rule` matches, e.g. "a string" for `sq_string`.
pub fn rule_name(rule: Rule) -> &'static str {
    use Rule::*;
    match rule {
        EOI => "end of file",
        WHITESPACE | nl => "white space",
        COMMENT => "a comment",
        sep => "a new line or `;`",
        file => "a pipeline",
        shebang => "a `#!` line",
        package => "a `package` line",
        stmts | stmt | simple_stmt => "a statement",
        block => "a `{ … }` block",
        annotation => "an annotation",
        annotated => "an annotated declaration",
        underscore => "`_`",
        import_stmt => "an `import`",
        class_def | opaque_body => "a class definition",
        class_kind => "`class`, `interface`, `enum` or `trait`",
        function_def => "a function definition",
        params | param => "a parameter",
        modifier => "a modifier",
        if_stmt => "an `if` statement",
        else_if => "`else if`",
        else_clause => "`else`",
        cond => "a condition in parentheses",
        body => "a block or a statement",
        for_in_stmt | for_stmt => "a `for` loop",
        for_init => "a loop initialiser",
        for_cond => "a loop condition",
        for_update => "a loop update",
        while_stmt => "a `while` loop",
        try_stmt => "a `try` block",
        catch_clause => "a `catch` block",
        catch_types => "an exception type",
        finally_clause => "a `finally` block",
        switch_stmt => "a `switch` statement",
        case_clause => "a `case`",
        default_clause => "a `default:` case",
        case_body => "the statements of a case",
        return_stmt => "a `return`",
        throw_stmt => "a `throw`",
        assert_stmt => "an `assert`",
        break_stmt => "`break`",
        continue_stmt => "`continue`",
        decl_stmt => "a declaration",
        assign_stmt => "an assignment",
        lvalue | lvalue_member | lvalue_index => "something to assign to",
        assign_op => "`=`",
        value | expr | expr_stmt | operand | primary | interp_body => "an expression",
        command_stmt | command_call => "a step call",
        command_name => "a step name",
        command_args | command_first | command_start => "a step argument",
        ternary_tail => "`?` or `?:`",
        prefix_op => "an operator",
        infix_op => "an operator",
        postfix => "`.`, `[` or `(`",
        member => "`.` and a name",
        member_op => "`.` or `?.`",
        index => "`[` and an index",
        inc_dec => "`++` or `--`",
        as_cast => "`as` and a type",
        call_suffix | paren_args => "arguments in parentheses",
        trailing_closure => "a closure",
        arg_list | arg => "an argument",
        named_arg => "a named argument",
        arg_name => "an argument name",
        paren_expr => "an expression in parentheses",
        call_or_var => "a name or a call",
        new_expr => "`new`",
        closure => "a closure `{ … }`",
        closure_params => "closure parameters",
        collection => "a list `[…]` or a map `[key: value]`",
        empty_map => "`[:]`",
        coll_entry => "a list item or a map entry `key: value`",
        word_key => "a map key",
        closure_param => "a closure parameter",
        literal => "a value",
        number | int_suffix | num_suffix => "a number",
        ident_start | ident_char | ident | ident_or_kw | gvar_name => "a name",
        member_name => "a property or method name",
        qualified_name => "a qualified name",
        type_ref | type_head | type_args | primitive => "a type",
        keyword => "a keyword",
        kw_abstract => "`abstract`",
        kw_as => "`as`",
        kw_assert => "`assert`",
        kw_break => "`break`",
        kw_case => "`case`",
        kw_catch => "`catch`",
        kw_class => "`class`",
        kw_continue => "`continue`",
        kw_default => "`default`",
        kw_def => "`def`",
        kw_else => "`else`",
        kw_enum => "`enum`",
        kw_false => "`false`",
        kw_finally => "`finally`",
        kw_final => "`final`",
        kw_for => "`for`",
        kw_if => "`if`",
        kw_import => "`import`",
        kw_instanceof => "`instanceof`",
        kw_interface => "`interface`",
        kw_in => "`in`",
        kw_new => "`new`",
        kw_null => "`null`",
        kw_package => "`package`",
        kw_private => "`private`",
        kw_protected => "`protected`",
        kw_public => "`public`",
        kw_return => "`return`",
        kw_static => "`static`",
        kw_switch => "`switch`",
        kw_throws => "`throws`",
        kw_throw => "`throw`",
        kw_trait => "`trait`",
        kw_true => "`true`",
        kw_try => "`try`",
        kw_while => "`while`",
        sq_string | sq_text | tsq_string | tsq_text => "a string",
        dq_string | dq_text | tdq_string | tdq_text | dq_plain | dq_plain_text => "a string",
        interp => "`${…}`",
        gvar => "`$name`",
        escape => "an escape sequence",
        slashy_string | slashy_text => "a `/…/` string",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_has_a_human_name() {
        for &rule in Rule::all_rules() {
            let name = rule_name(rule);
            let ident = format!("{rule:?}");
            assert!(!name.is_empty(), "{ident} has no human name");
            assert!(
                !name.contains('_') || name.contains('`'),
                "{ident}'s name {name:?} reads like an identifier"
            );
            assert_ne!(name, ident, "{ident}'s human name is its rule name");
            assert!(
                name.contains(' ') || name.contains('`'),
                "{ident}'s name {name:?} is not words"
            );
        }
    }
}
