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
    namespaces: tuple = ("personal",)
    special_use_names: tuple = ()


def mb(name, delim="/", *flags):
    return Mailbox(name, delim, tuple(flags))


SLASH_TARGET = (mb("INBOX"),)
DOT_TARGET = (mb("INBOX", "."),)


def plan(source, target=SLASH_TARGET, source_ns=None, target_ns=None, create_special_use=False, **rules):
    plans, skipped = plan_folders(source, target, Rules(**rules), source_ns, target_ns, create_special_use)
    return {p.path: p for p in plans}, {s.path: s.reason for s in skipped}


def targets(source, target=SLASH_TARGET, *ns, **rules):
    return {path: p.target for path, p in plan(source, target, *ns, **rules)[0].items()}


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
        "INBOX/Work": "Work",  # the source's personal prefix "INBOX." is dropped
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
        # the source's "INBOX." prefix is its personal namespace, not a folder: dropped (issue 11)
        (mb("INBOX.Work.Clients", "."), SLASH_TARGET, ("INBOX/Work/Clients", "Work/Clients")),
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

def test_one_folder_per_role_the_others_keep_their_names():
    """Sent (\\Sent) and 已发送 and Sent Messages: the attribute takes the role; the others are
    folders of their own, never merged into the target's Sent (issue 11: a split Sent folder)."""
    target = (mb("INBOX"), mb("Sent", "/", "\\Sent"))
    source = (mb("INBOX"), mb("Sent Messages"), mb("Sent", "/", "\\Sent"), mb("已发送"), mb("Work"))
    plans, _ = plan(source, target)
    assert {p: x.target for p, x in plans.items()} == {
        "INBOX": "INBOX", "Sent": "Sent", "Sent Messages": "Sent Messages", "已发送": "已发送", "Work": "Work"}
    assert all(x.merged_with == () for x in plans.values())
    # the same whatever the LIST order
    assert targets(tuple(reversed(source)), target) == {p: x.target for p, x in plans.items()}


@pytest.mark.parametrize(
    "source,winner",
    [
        ((mb("已发送"), mb("Sent Messages")), "Sent Messages"),          # name rank
        ((mb("已发送", "/", "\\Sent"), mb("Sent Messages")), "已发送"),  # attribute beats name
        ((mb("Sent Items"), mb("INBOX/Sent Items")), "INBOX/Sent Items"),  # same rank: smaller path
        ((mb("已发邮件"),), "已发邮件"),
    ],
)
def test_role_holder_rule(source, winner):
    got = targets(source)
    assert [p for p, t in got.items() if t == "Sent"] == [winner]


def test_merged_with():
    target = (mb("INBOX"), mb("Sent", "/", "\\Sent"))
    plans, _ = plan((mb("INBOX"), mb("Sent Messages"), mb("Sent")), target, map=(("Sent Messages", "Sent"),))
    assert plans["Sent"].merged_with == ("Sent Messages",)
    assert plans["Sent Messages"].merged_with == ("Sent",)


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


# --- namespaces (issue 11) ----------------------------------------------------

from mailsyncd.imap.folders import keep_recorded  # noqa: E402
from mailsyncd.imap.namespaces import from_response, guess, locate  # noqa: E402

COURIER_NS = from_response(((("INBOX.", "."),), None, (("#shared.", "."), ("shared.", "."))))
CYRUS_NS = from_response(((("INBOX.", "."),), (("user.", "."),), (("", "."),)))
DOVECOT_NS = from_response(((("", "/"),), None, None))
DOVECOT_DOT_NS = from_response(((("INBOX.", "."),), None, None))
DOVECOT_SHARED_NS = from_response(((("", "/"),), (("shared/", "/"),), None))

COURIER_SOURCE = (
    mb("INBOX", ".", "\\Unmarked"), mb("INBOX.Sent", "."), mb("INBOX.Drafts", "."), mb("INBOX.Trash", "."),
    mb("INBOX.Junk", "."), mb("INBOX.客户", ".", "\\HasChildren"), mb("INBOX.客户.重要", "."),
    mb("INBOX.Archive.2021", "."), mb("#shared.team", "."), mb("shared.announce", "."))


def test_courier_source_onto_fresh_stock_dovecot():
    """The issue's first bug: INBOX.Sent went to INBOX/Sent beside the client's empty Sent."""
    plans, skipped = plan(COURIER_SOURCE, (mb("INBOX"),), COURIER_NS, DOVECOT_NS)
    assert {p: x.target for p, x in plans.items()} == {
        "INBOX": "INBOX", "INBOX/Sent": "Sent", "INBOX/Drafts": "Drafts", "INBOX/Trash": "Trash",
        "INBOX/Junk": "Junk", "INBOX/客户": "客户", "INBOX/客户/重要": "客户/重要", "INBOX/Archive/2021": "Archive/2021"}
    assert skipped == {"#shared/team": "in the shared namespace (not in folders.namespaces)",
                       "shared/announce": "in the shared namespace (not in folders.namespaces)"}


def test_courier_source_without_namespace_answer_is_guessed_from_list():
    plans, _ = plan(COURIER_SOURCE[:8], (mb("INBOX"),))
    assert plans["INBOX/客户/重要"].target == "客户/重要"
    assert plans["INBOX/Sent"].target == "Sent"


def test_dovecot_source_onto_dot_target_with_inbox_prefix():
    source = (mb("INBOX"), mb("Sent", "/", "\\Sent"), mb("客户/重要"), mb("inbox/Old"))
    target = (mb("INBOX", "."),)
    assert targets(source, target, DOVECOT_NS, DOVECOT_DOT_NS) == {
        "INBOX": "INBOX", "Sent": "INBOX.Sent", "客户/重要": "INBOX.客户.重要", "INBOX/Old": "INBOX.Old"}


def test_special_use_created_where_the_target_offers_create_special_use():
    source = (mb("INBOX"), mb("Sent Items"), mb("Sent Items/2020"), mb("Junk E-mail"), mb("Work"))
    plans, _ = plan(source, (mb("INBOX", "."),), DOVECOT_NS, CYRUS_NS, create_special_use=True)
    assert {p: (x.target, x.create_use) for p, x in plans.items()} == {
        "INBOX": ("INBOX", None), "Sent Items": ("INBOX.Sent", "\\Sent"),
        "Sent Items/2020": ("INBOX.Sent.2020", None), "Junk E-mail": ("INBOX.Junk", "\\Junk"),
        "Work": ("INBOX.Work", None)}
    # not offered, or the folder is there already: a plain CREATE (or none)
    plans, _ = plan(source, (mb("INBOX", "."), mb("INBOX.Junk", ".", "\\Junk")), DOVECOT_NS, CYRUS_NS)
    assert {x.create_use for x in plans.values()} == {None}


def test_special_use_names_per_domain():
    source = (mb("INBOX"), mb("Sent Messages"), mb("垃圾邮件"))
    assert targets(source, SLASH_TARGET, special_use_names=(("sent", "已发送"), ("junk", "Spam"))) == {
        "INBOX": "INBOX", "Sent Messages": "已发送", "垃圾邮件": "Spam"}
    # the target's attribute still wins over the configured name
    assert targets(source, (mb("INBOX"), mb("Gesendet", "/", "\\Sent")),
                   special_use_names=(("sent", "已发送"),))["Sent Messages"] == "Gesendet"


def test_gmail_names_without_attributes():
    source = (mb("INBOX"), mb("[Gmail]/Sent Mail"), mb("[Gmail]/All Mail"), mb("[Gmail]/Starred"),
              mb("[Gmail]/Bin"), mb("[Gmail]/Spam"))
    plans, skipped = plan(source)
    assert {p: x.target for p, x in plans.items()} == {
        "INBOX": "INBOX", "[Gmail]/Sent Mail": "Sent", "[Gmail]/Bin": "Trash", "[Gmail]/Spam": "Junk"}
    assert skipped == {"[Gmail]/All Mail": "virtual folder (\\All, by name)",
                       "[Gmail]/Starred": "virtual folder (\\Flagged, by name)"}


@pytest.mark.parametrize(
    "wanted,expected",
    [
        (("personal",), {"INBOX": "INBOX", "INBOX/Work": "Work"}),
        (("personal", "other"), {"INBOX": "INBOX", "INBOX/Work": "Work", "user/bob/Team": "user/bob/Team"}),
        (("personal", "other", "shared"),
         {"INBOX": "INBOX", "INBOX/Work": "Work", "user/bob/Team": "user/bob/Team",
          "Public": "Shared Folders/Public"}),
    ],
)
def test_other_and_shared_namespaces_opt_in(wanted, expected):
    source = (mb("INBOX", "."), mb("INBOX.Work", "."), mb("user.bob.Team", "."), mb("Public", "."))
    assert targets(source, SLASH_TARGET, CYRUS_NS, DOVECOT_NS, namespaces=wanted) == expected


def test_dovecot_shared_namespace_excluded_by_default():
    source = (mb("INBOX"), mb("shared/alice@example.com", "/", "\\Noselect"), mb("shared/alice@example.com/INBOX"))
    plans, skipped = plan(source, SLASH_TARGET, DOVECOT_SHARED_NS, DOVECOT_NS)
    assert set(plans) == {"INBOX"}
    assert skipped["shared/alice@example.com/INBOX"] == "in the other namespace (not in folders.namespaces)"


@pytest.mark.parametrize(
    "answer",
    [None, (), (None, None, None), ((("INBOX.", "::"),), None, None), ((("INBOX.",),), None, None),
     (((b"INBOX.\r\nA1 LOGOUT", "."),), None, None), ("x", None, None), (None, (("user.", "."),), None)],
)
def test_hostile_namespace_answer_is_refused(answer):
    assert from_response(answer) is None


def test_locate_and_guess():
    assert locate("inbox", ".", COURIER_NS) == ("personal", ["INBOX"])
    assert locate("Inbox.Sent", ".", COURIER_NS) == ("personal", ["Sent"])
    assert locate("user.bob.x", ".", CYRUS_NS) == ("other", ["user", "bob", "x"])
    ns = guess((mb("INBOX", "."), mb("INBOX.a", "."), mb("INBOX.b", ".")))
    assert (ns.personal.prefix, ns.personal.delimiter, ns.from_server) == ("INBOX.", ".", False)
    assert guess((mb("INBOX", "."), mb("INBOX.a", "."), mb("b", "."))).personal.prefix == ""


def test_keep_recorded_mapping_reports_the_change():
    target = (mb("INBOX"), mb("Sent", "/", "\\Sent"), mb("已发送"))
    plans, _ = plan((mb("INBOX"), mb("Sent", "/", "\\Sent"), mb("已发送", "/", "\\Sent")), target)
    plans = sorted(plans.values(), key=lambda p: p.path)
    recorded = {"INBOX": "INBOX", "已发送": "已发送", "Sent": "Sent"}
    kept, changes = keep_recorded(plans, recorded, target)
    assert changes == []
    recorded["Sent"] = "Sent Items"
    kept, changes = keep_recorded(plans, recorded, target)
    assert [(c.path, c.kept, c.would_be) for c in changes] == [("Sent", "Sent Items", "Sent")]
    assert {p.path: (p.target, p.target_exists) for p in kept}["Sent"] == ("Sent Items", False)
