"""The prefix tree of cache-aware routing: its behaviour, and the compiled kernel held equal to
its twin over random sequences of calls."""
from __future__ import annotations

import importlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import kernel_fixture

prefix_tree_impl = kernel_fixture("prefix_tree")


def test_match_reports_each_tenant_at_its_deepest_position(prefix_tree_impl):
    tree = prefix_tree_impl.PrefixTree(1000)
    tree.insert([1, 2, 3, 4, 5], 0)
    tree.insert([1, 2, 3, 9], 1)
    tree.insert([1, 2], 2)
    assert tree.match([1, 2, 3, 4, 7]) == [(0, 4), (1, 3), (2, 2)]
    assert tree.match([1, 2, 3, 9, 9]) == [(1, 4), (0, 3), (2, 2)]
    assert tree.match([7]) == [] and tree.match([]) == []
    assert (tree.size, tree.node_count) == (6, 4)  # [1 2] [3] [4 5] [9]
    assert [tree.tenant_tokens(t) for t in range(4)] == [5, 4, 2, 0]


def test_removing_a_tenant_drops_the_nodes_only_it_held(prefix_tree_impl):
    tree = prefix_tree_impl.PrefixTree(1000)
    tree.insert([1, 2, 3, 4, 5], 0)
    tree.insert([1, 2, 3, 9], 1)
    tree.remove_tenant(0)
    assert tree.match([1, 2, 3, 4, 5]) == [(1, 3)]
    assert (tree.size, tree.node_count, tree.tenant_tokens(0)) == (4, 2, 0)
    tree.remove_tenant(1)
    assert (tree.size, tree.node_count) == (0, 0)


def test_eviction_drops_the_least_recently_used_prompts_first(prefix_tree_impl):
    tree = prefix_tree_impl.PrefixTree(40)
    for i in range(8):  # eight 5-token prompts: 40 tokens, at the bound
        tree.insert([i] * 4 + [99], 0)
    tree.insert([0] * 4 + [99], 0)  # prompt 0 used again: now the most recent
    tree.insert([8] * 4 + [99], 0)  # 45 tokens: down to 35, the two least recent go
    assert [i for i in range(9) if tree.match([i] * 4 + [99])] == [0, 3, 4, 5, 6, 7, 8]
    assert tree.tenant_tokens(0) == 35


def test_eviction_keeps_a_shared_prefix_while_a_longer_prompt_holds_it(prefix_tree_impl):
    tree = prefix_tree_impl.PrefixTree(12)
    tree.insert(list(range(8)), 0)  # the shared system prompt
    tree.insert(list(range(8)) + [50, 51, 52], 0)
    tree.insert(list(range(8)) + [60, 61, 62], 0)  # 14 tokens: evicts the oldest leaf ([50..52])
    assert tree.match(list(range(8)) + [60, 61, 62]) == [(0, 11)]
    assert tree.match(list(range(8)) + [50]) == [(0, 8)]
    assert tree.tenant_tokens(0) == 11


def test_bad_arguments_are_refused(prefix_tree_impl):
    with pytest.raises(ValueError):
        prefix_tree_impl.PrefixTree(0)
    with pytest.raises(ValueError):
        prefix_tree_impl.PrefixTree(10).insert([1], -1)


_prompts = st.lists(st.integers(0, 5), max_size=12)  # a small alphabet: prompts share prefixes
_calls = st.lists(st.one_of(
    st.tuples(st.just("insert"), _prompts, st.integers(0, 3)),
    st.tuples(st.just("match"), _prompts, st.just(0)),
    st.tuples(st.just("remove"), st.just([]), st.integers(0, 3))), max_size=60)


@pytest.mark.compiled_only
@settings(max_examples=300, deadline=None)
@given(calls=_calls, bound=st.integers(1, 40))
def test_compiled_tree_equals_twin(calls, bound):
    compiled, twin = (importlib.import_module(f"smg._ext.{name}").PrefixTree(bound) for name in ("prefix_tree", "prefix_tree_py"))
    for op, tokens, tenant in calls:
        if op == "insert":
            compiled.insert(tokens, tenant)
            twin.insert(tokens, tenant)
        elif op == "remove":
            compiled.remove_tenant(tenant)
            twin.remove_tenant(tenant)
        assert compiled.match(tokens) == twin.match(tokens)
        assert (compiled.size, compiled.node_count) == (twin.size, twin.node_count)
        assert [compiled.tenant_tokens(t) for t in range(4)] == [twin.tenant_tokens(t) for t in range(4)]
    for prefix in range(6):
        assert compiled.match([prefix, 0, 1, 2]) == twin.match([prefix, 0, 1, 2])
