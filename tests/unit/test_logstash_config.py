"""The Logstash pipeline parser (orchestrator/inkdeploy/logstash_config.py): it rejects what
Logstash rejects, naming the line, and accepts the grammar's corners the roles' pipeline uses."""

import doctest
import re

import pytest

from inkdeploy import logstash_config
from inkdeploy.logstash_config import LogstashSyntaxError, parse_logstash_config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("input { beats { port => 5044 }", "missing '}'"),
        ("filter { mutate { id => x", "missing '}' after the attributes"),
        ("filter { mutate { add_field => { a => b ", "missing '}' in a hash"),
        ("filter { mutate { add_field { a => b } } }", "expected '=>'"),
        ('filter { mutate { id => "x } }', "unterminated string"),
        ("filter { if [a] == 1 mutate { } }", "unexpected 'mutate'"),
        ("filter { else { } }", "else without if"),
        ("outputs { }", "not input, filter or output"),
        ("filter { if [a] =~ /abc { } }", "unterminated regular expression"),
        ("filter { if ([a] { } }", "'{' inside parentheses"),
        ("", "no input, filter or output"),
    ],
)
def test_the_pipeline_parser_rejects_broken_configs(text, message):
    with pytest.raises(LogstashSyntaxError, match=re.escape(message)):
        parse_logstash_config(text)


def test_the_pipeline_parser_accepts_what_logstash_accepts():
    text = """
    # a comment with { braces }
    input { beats { port => 5044 codec => json { charset => "UTF-8" } } }
    filter {
      if [a][b] =~ /x\\/y{2}/ and "tag" not in [tags] or ![c] {
        mutate { add_field => { "k" => "%{v}" } }
      }
      else if [n] >= 3 { drop { } }
      else { ruby { code => 'event.set("x", "}")' } }
    }
    output { stdout { } }
    """
    assert parse_logstash_config(text) == {
        "input": ["beats"],
        "filter": ["mutate", "drop", "ruby"],
        "output": ["stdout"],
    }


def test_the_error_names_the_line():
    with pytest.raises(LogstashSyntaxError, match=r"^line 3: expected '=>'"):
        parse_logstash_config("input {\n  beats {\n    port 5044\n  }\n}\n")


def test_the_module_examples():
    assert doctest.testmod(logstash_config).failed == 0
