"""The migration runner splits a file into statements at `;`, except inside dollar quotes."""

from __future__ import annotations

from banking_es.db.migrate import available, split_statements


def test_a_function_body_is_one_statement_with_its_semicolons() -> None:
    sql = """
    -- a comment; with a semicolon
    CREATE TABLE a (x int);
    INSERT INTO a VALUES ($1);
    CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $fn$
    BEGIN
        PERFORM 1;
        RETURN 2;
    END
    $fn$;
    SELECT $$a;b$$, 'c'
    """
    statements = split_statements(sql)
    assert [s.split()[0] for s in statements] == ["CREATE", "INSERT", "CREATE", "SELECT"]
    assert "PERFORM 1;\n        RETURN 2;" in statements[2]
    assert statements[2].endswith("$fn$")
    assert statements[3] == "SELECT $$a;b$$, 'c'"


def test_the_append_function_migration_is_one_statement() -> None:
    [function] = [m for m in available("postgres") if m.name == "append_function"]
    [statement] = split_statements(function.sql)
    assert statement.startswith("CREATE FUNCTION banking_es_append_if_current(")
    assert statement.endswith("$fn$")
