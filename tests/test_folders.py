from dataclasses import dataclass

import pytest

from mailsyncd.imap.folders import (
    FolderPlan,
    Mailbox,
    Skipped,
    join_path,
    plan_folders,
    source_role,
    split_path,
)


@dataclass(frozen=True)
class Rules:
    layout: str = "mirror"
    prefix: str = ""
    map: tuple = ()
    exclude: tuple = ()
    special_use: bool = True


def mb(name, delim="/", *flags):
    return Mailbox(name, delim, tuple(flags))


SLASH_TARGET = (mb("INBOX"),)
DOT_TARGET = (mb("INBOX", "."),)


def plan(source, target=SLASH_TARGET, **rules):
    plans, skipped = plan_folders(source, target, Rules(**rules))
    return {p.path: p for p in plans}, {s.path: s.reason for s in skipped}


def targets(source, target=SLASH_TARGET, **rules):
    return {path: p.target for path, p in plan(source, target, **rules)[0].items()}


# --- roles -----------------------------------------------------------------

@pytest.mark.parametrize(
    "flag,role",
    [("\\Sent", "sent"), ("\\Drafts", "drafts"), ("\\Trash", "trash"), ("\\Junk", "junk"),
     ("\\Archive", "archive"), ("\\SENT", "sent"), ("\\junk", "junk"), ("\\HasChildren", None)],
)
def test_flag_roles(flag, role):
    assert source_role(mb("Whatever/Deep", "/", flag)) == role


def test_flag_beats_name_and_inbox_beats_flag():
    assert source_role(mb("Sent", "/", "\\Trash")) == "trash"
    assert source_role(mb("INBOX", "/", "\\Sent")) == "inbox"


NAMES = [
    ("sent", ["Sent", "Sent Messages", "Sent Items", "Sent Mail", "已发送", "已发送邮件"]),
    ("drafts", ["Drafts", "Draft", "草稿箱", "草稿"]),
    ("trash", ["Trash", "Deleted Messages", "Deleted Items", "Deleted", "已删除", "已删除邮件"]),
    ("junk", ["Junk", "Spam", "Junk E-mail", "Junk Email", "Bulk Mail", "垃圾邮件", "垃圾箱"]),
    ("archive", ["Archive", "Archives", "归档"]),
]
NAME_CASES = [(role, name) for role, names in NAMES for name in names]


@pytest.mark.parametrize("role,name", NAME_CASES)
def test_name_roles(role, name):
    assert source_role(mb(name)) == role
    assert source_role(mb(name.upper())) == role
    assert source_role(mb(name.lower(), None)) == role
    assert source_role(mb("INBOX." + name, ".")) == role
    assert source_role(mb("inbox/" + name, "/")) == role
    # deeper than INBOX's children is a user folder
    assert source_role(mb("Work/" + name, "/")) is None
    assert source_role(mb("INBOX.Work." + name, ".")) is None


@pytest.mark.parametrize("name", ["INBOX", "inbox", "Inbox"])
def test_inbox_role(name):
    assert source_role(mb(name)) == "inbox"
    assert source_role(mb(name, None)) == "inbox"


def test_unknown_name_has_no_role():
    assert source_role(mb("Sentimental")) is None
    assert source_role(mb("INBOX/Foo")) is None


# --- special use -----------------------------------------------------------

def test_special_use_onto_flagged_target():
    target = (mb("INBOX"), mb("Sent Items", "/", "\\Sent"), mb("Sent"), mb("Papierkorb", "/", "\\Trash"))
    source = (mb("INBOX", "."), mb("INBOX.Sent", "."), mb("INBOX.Sent.2020", "."),
              mb("INBOX.Trash", ".", "\\Trash"), mb("INBOX.Work", "."))
    plans, _ = plan(source, target)
    assert {p: x.target for p, x in plans.items()} == {
        "INBOX": "INBOX",
        "INBOX/Sent": "Sent Items",
        "INBOX/Sent/2020": "Sent Items/2020",
        "INBOX/Trash": "Papierkorb",
        "INBOX/Work": "INBOX/Work",
    }
    assert plans["INBOX/Sent"].role == "sent"
    assert plans["INBOX/Sent"].target_exists
    assert not plans["INBOX/Sent/2020"].target_exists


def test_special_use_gmail_source():
    source = (mb("INBOX"), mb("[Gmail]", "/", "\\Noselect", "\\HasChildren"),
              mb("[Gmail]/Sent Mail", "/", "\\Sent"), mb("[Gmail]/Spam", "/", "\\Junk"),
              mb("[Gmail]/All Mail", "/", "\\All"), mb("[Gmail]/Starred", "/", "\\Flagged"))
    target = (mb("INBOX", "."), mb("INBOX.Sent", ".", "\\Sent"), mb("INBOX.Junk", ".", "\\Junk"))
    plans, skipped = plan(source, target)
    assert {p: x.target for p, x in plans.items()} == {
        "INBOX": "INBOX", "[Gmail]/Sent Mail": "INBOX.Sent", "[Gmail]/Spam": "INBOX.Junk"}
    assert skipped == {
        "[Gmail]": "\\Noselect (not a mailbox)",
        "[Gmail]/All Mail": "virtual folder (\\All)",
        "[Gmail]/Starred": "virtual folder (\\Flagged)",
    }


def test_special_use_by_target_name_without_flags():
    target = (mb("INBOX"), mb("Work/Sent"), mb("sent"), mb("Deleted Items"), mb("Drafts", "/", "\\Noselect"))
    source = (mb("Sent Messages"), mb("Sent Messages/2020"), mb("Trash"), mb("Drafts"), mb("Junk"))
    plans, _ = plan(source, target)
    assert {p: x.target for p, x in plans.items()} == {
        "Sent Messages": "sent",
        "Sent Messages/2020": "sent/2020",
        "Trash": "Deleted Items",
        "Drafts": "Drafts",  # the target's Drafts is \Noselect: not a home
        "Junk": "Junk",  # no target counterpart: keeps its own name
    }
    assert plans["Sent Messages"].target_exists
    assert not plans["Junk"].target_exists


def test_children_follow_unlisted_role_parent():
    target = (mb("INBOX"), mb("Sent Items", "/", "\\Sent"))
    assert targets((mb("Sent/2020"), mb("Sent/2020/Q1")), target) == {
        "Sent/2020": "Sent Items/2020", "Sent/2020/Q1": "Sent Items/2020/Q1"}


def test_special_use_prefers_top_level_and_table_order():
    target = (mb("INBOX", "."), mb("INBOX.Sent", "."), mb("Sent Items", "."), mb("Sent", "."))
    assert targets((mb("Sent Mail"),), target) == {"Sent Mail": "Sent"}


def test_special_use_false():
    target = (mb("INBOX"), mb("Sent Items", "/", "\\Sent"))
    assert targets((mb("Sent"), mb("Sent/2020")), target, special_use=False) == {
        "Sent": "Sent", "Sent/2020": "Sent/2020"}


# --- delimiters ------------------------------------------------------------

@pytest.mark.parametrize(
    "source,target,expected",
    [
        (mb("INBOX.Work.Clients", "."), SLASH_TARGET, ("INBOX/Work/Clients", "INBOX/Work/Clients")),
        (mb("Work.a/b", "."), SLASH_TARGET, ("Work/a/b", "Work/a_b")),  # "/" cannot live in a component
        (mb("Work/Clients", "/"), DOT_TARGET, ("Work/Clients", "Work.Clients")),
        (mb("Work/v1.2", "/"), DOT_TARGET, ("Work/v1.2", "Work.v1_2")),
        (mb("Work.Clients", None), SLASH_TARGET, ("Work.Clients", "Work.Clients")),
        (mb("a/b", None), SLASH_TARGET, ("a/b", "a_b")),
        (mb("Work/Clients", "/"), (mb("INBOX", None),), ("Work/Clients", "Work/Clients")),
        (mb("Work/Clients", "/"), (), ("Work/Clients", "Work/Clients")),  # empty target: "/"
        (mb("客户/重要", "/"), DOT_TARGET, ("客户/重要", "客户.重要")),
        (mb("客户.重要", "."), SLASH_TARGET, ("客户/重要", "客户/重要")),
        (mb("Café & Co/Reçus", "/"), DOT_TARGET, ("Café & Co/Reçus", "Café & Co.Reçus")),
    ],
)
def test_delimiters(source, target, expected):
    plans, _ = plan((source,), target)
    (p,) = plans.values()
    assert (p.path, p.target) == expected
    assert p.source == source.name


def test_target_delimiter_from_inbox_entry():
    target = (mb("Other", "/"), mb("INBOX", "."))
    assert targets((mb("A/B"),), target) == {"A/B": "A.B"}


@pytest.mark.parametrize(
    "name,delim,parts",
    [("客户/重要", "/", ["客户", "重要"]), ("客户.重要", ".", ["客户", "重要"]),
     ("INBOX", ".", ["INBOX"]), ("a.b", None, ["a.b"]), ("Café & Co", "/", ["Café & Co"])],
)
def test_split_join_round_trip(name, delim, parts):
    assert split_path(name, delim) == parts
    assert join_path(parts, delim) == name


# --- skipping --------------------------------------------------------------

def test_noselect_parents_skipped_children_planned():
    source = (mb("Work", "/", "\\Noselect", "\\HasChildren"), mb("Work/A"),
              mb("Gone", "/", "\\NonExistent"), mb("Gone/B"))
    plans, skipped = plan(source)
    assert set(plans) == {"Work/A", "Gone/B"}
    assert skipped == {"Work": "\\Noselect (not a mailbox)", "Gone": "\\NonExistent (not a mailbox)"}


@pytest.mark.parametrize(
    "patterns,excluded",
    [
        (("Junk*",), {"Junk", "Junk/old"}),
        (("Junk",), {"Junk"}),
        (("*/old",), {"Junk/old", "INBOX/old"}),
        (("inbox",), {"INBOX"}),
        (("Inbox/*",), {"INBOX/old"}),
        (("junk",), set()),  # other names are case-sensitive
        (("INBOX", "Junk*"), {"INBOX", "Junk", "Junk/old"}),
    ],
)
def test_exclude(patterns, excluded):
    source = (mb("inbox"), mb("INBOX/old"), mb("Junk"), mb("Junk/old"), mb("Work"))
    plans, skipped = plan(source, exclude=patterns)
    assert set(skipped) == excluded
    assert set(plans) == {"INBOX", "INBOX/old", "Junk", "Junk/old", "Work"} - excluded
    for path in excluded:
        assert skipped[path].startswith("excluded by rule '")


def test_exclude_reason_names_the_rule():
    _, skipped = plan((mb("Junk"),), exclude=("Spam", "Junk*"))
    assert skipped == {"Junk": "excluded by rule 'Junk*'"}


# --- map / layout ----------------------------------------------------------

MAP_SOURCE = (mb("INBOX"), mb("Archive"), mb("Archive/2021"), mb("Archive/2021/Q1"),
              mb("Archived"), mb("Work"))


@pytest.mark.parametrize(
    "rules,expected",
    [
        (dict(map=(("Work", "Job"),)),
         {"Work": "Job"}),
        (dict(map=(("Archive", "Old/Archive"),)),
         {"Archive": "Old/Archive", "Archive/2021": "Old/Archive/2021",
          "Archive/2021/Q1": "Old/Archive/2021/Q1", "Archived": "Archived"}),
        (dict(map=(("Archive", "Old"), ("Archive/2021", "Y2021"))),  # longest key wins
         {"Archive": "Old", "Archive/2021": "Y2021", "Archive/2021/Q1": "Y2021/Q1"}),
        (dict(map=(("Archive/2021", "Y2021"), ("Archive", "Old"))),  # regardless of order
         {"Archive": "Old", "Archive/2021": "Y2021", "Archive/2021/Q1": "Y2021/Q1"}),
        (dict(layout="under", prefix="Migrated"),
         {"INBOX": "Migrated/INBOX", "Archive/2021": "Migrated/Archive/2021", "Work": "Migrated/Work"}),
        (dict(layout="under", prefix="Migrated/old", map=(("Work", "Job"),)),  # map not under prefix
         {"INBOX": "Migrated/old/INBOX", "Work": "Job"}),
        (dict(map=(("inbox", "Old Inbox"),)),
         {"INBOX": "Old Inbox"}),
    ],
)
def test_map_and_layout(rules, expected):
    got = targets(MAP_SOURCE, **rules)
    for path, target in expected.items():
        assert got[path] == target


def test_map_beats_special_use_and_uses_target_delimiter():
    target = (mb("INBOX", "."), mb("Sent Items", ".", "\\Sent"))
    source = (mb("Sent"), mb("Sent/2020"), mb("Sent/2021"))
    assert targets(source, target, map=(("Sent/2020", "Old/Sent 2020"),)) == {
        "Sent": "Sent Items", "Sent/2020": "Old.Sent 2020", "Sent/2021": "Sent Items.2021"}


def test_under_layout_ignores_special_use():
    target = (mb("INBOX"), mb("Sent Items", "/", "\\Sent"))
    assert targets((mb("INBOX"), mb("Sent")), target, layout="under", prefix="Old") == {
        "INBOX": "Old/INBOX", "Sent": "Old/Sent"}


def test_unknown_layout():
    with pytest.raises(ValueError):
        plan((mb("INBOX"),), layout="sideways")


# --- merge, exists, order --------------------------------------------------

def test_merged_with():
    target = (mb("INBOX"), mb("Sent", "/", "\\Sent"))
    source = (mb("INBOX"), mb("Sent"), mb("Sent Messages"), mb("已发送"), mb("Work"))
    plans, _ = plan(source, target)
    assert plans["Sent"].merged_with == ("Sent Messages", "已发送")
    assert plans["Sent Messages"].merged_with == ("Sent", "已发送")
    assert plans["已发送"].merged_with == ("Sent", "Sent Messages")
    assert plans["Work"].merged_with == ()
    assert {plans[p].target for p in ("Sent", "Sent Messages", "已发送")} == {"Sent"}


def test_merged_by_map():
    plans, _ = plan((mb("A"), mb("B")), map=(("A", "C"), ("B", "C")))
    assert plans["A"].merged_with == ("B",)
    assert plans["B"].merged_with == ("A",)


@pytest.mark.parametrize(
    "target,path,exists",
    [
        ((mb("inbox"),), "INBOX", True),
        ((mb("Inbox", "."),), "INBOX", True),
        ((mb("INBOX"), mb("inbox/Foo")), "INBOX/Foo", True),
        ((mb("INBOX"), mb("work")), "Work", False),
        ((mb("INBOX"), mb("Work", "/", "\\Noselect")), "Work", False),
        ((mb("INBOX"), mb("Work", "/", "\\HasChildren")), "Work", True),
        ((mb("INBOX"), mb("客户/重要")), "客户/重要", True),
    ],
)
def test_target_exists(target, path, exists):
    plans, _ = plan((mb("INBOX"), mb("INBOX/Foo"), mb("Work"), mb("客户/重要")), target)
    assert plans[path].target_exists is exists


def test_order_and_types():
    source = (mb("Zeta"), mb("Alpha"), mb("inbox"), mb("Alpha/B"), mb("AAA", "/", "\\Noselect"), mb("Alpha"))
    plans, skipped = plan_folders(source, SLASH_TARGET, Rules())
    assert [p.path for p in plans] == ["INBOX", "Alpha", "Alpha/B", "Zeta"]
    assert all(isinstance(p, FolderPlan) for p in plans)
    assert plans[0] == FolderPlan("inbox", "INBOX", "INBOX", "inbox", True, ())
    assert skipped == [Skipped("AAA", "\\Noselect (not a mailbox)")]
