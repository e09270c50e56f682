"""Drives the GitLab simulator with python-gitlab's own calls.

Run by tests/it/python_gitlab.rs, which seeds the simulator and checks its
true state afterwards. Any answer python-gitlab does not accept (a status,
a body, a pagination header it cannot follow, or a warning such as a Link
URL that leaves the configured base) raises, and the script exits non-zero.

Input, all from the environment:
  GITLAB_URL       the simulator's origin, e.g. http://127.0.0.1:PORT
  GITLAB_TOKEN     a personal access token of a Maintainer of both projects
  PROJECT          full path of the project with the many variables
  VARIABLE_COUNT   how many variables the test seeded there
  GROUP            full path of a group the token's user belongs to
  PAT_ID           id of another personal access token of the same user
  BOT_PROJECT      full path of the project whose access token is rotated
  BOT_TOKEN_ID     id of that project access token

Output: one JSON object on stdout with ids only, never a token value.
"""

import json
import os
import sys
import warnings

import gitlab

# python-gitlab warns, rather than fails, when a pagination link points
# elsewhere than the configured URL; for a simulator that is a deviation.
warnings.simplefilter("error")

env = os.environ
gl = gitlab.Gitlab(env["GITLAB_URL"], private_token=env["GITLAB_TOKEN"], per_page=20)
gl.auth()
report = {"user": gl.user.username}


def step(name):
    print(f"python-gitlab: {name}", file=sys.stderr)


step("a list over several pages, with get_all and with the iterator")
project = gl.projects.get(env["PROJECT"])
expected = int(env["VARIABLE_COUNT"])
listed = project.variables.list(get_all=True)
assert len(listed) == expected, f"get_all gave {len(listed)} of {expected} variables"
keys = [v.key for v in listed]
assert len(set(keys)) == expected, "get_all repeated items across pages"
iterated = sum(1 for _ in project.variables.list(iterator=True))
assert iterated == expected, f"iterator gave {iterated} of {expected} variables"
page = project.variables.list(page=2, per_page=10)
assert [v.key for v in page] == keys[10:20], "page 2 is not the second ten"
report["variables_listed"] = len(listed)

step("a group by its full path")
group = gl.groups.get(env["GROUP"])
assert group.full_path == env["GROUP"], group.full_path
report["group_id"] = group.id

step("rotating a personal access token")
pat = gl.personal_access_tokens.get(int(env["PAT_ID"]))
assert pat.active and not pat.revoked
rotated = pat.rotate()
assert rotated["token"].startswith("glpat-"), "no new token value"
assert rotated["id"] != int(env["PAT_ID"]), "rotation kept the id"
assert pat.id == rotated["id"], "the object did not take the new attributes"
# The new token works; the old one is never used again (reuse detection).
fresh = gitlab.Gitlab(env["GITLAB_URL"], private_token=rotated["token"])
me = fresh.personal_access_tokens.get("self")
assert me.id == rotated["id"], "the new token is not the rotated one"
report["pat_new_id"] = rotated["id"]

step("rotating a project access token")
bot_project = gl.projects.get(env["BOT_PROJECT"])
bot = bot_project.access_tokens.get(int(env["BOT_TOKEN_ID"]))
rotated = bot.rotate()
assert rotated["token"].startswith("glpat-"), "no new token value"
assert "access_level" in rotated, "a project token's answer has its access level"
report["bot_new_id"] = rotated["id"]

step("pipeline triggers: create, list, rename, delete")
trigger = project.triggers.create({"description": "python-gitlab check"})
assert trigger.token.startswith("glptt-"), "the creator sees the full token"
triggers = project.triggers.list(get_all=True)
assert trigger.id in [t.id for t in triggers], "the new trigger is not listed"
# What set_trigger_description sends: PUT with the new description.
trigger.description = "python-gitlab renamed"
trigger.save()
assert project.triggers.get(trigger.id).description == "python-gitlab renamed"
trigger.delete()
assert trigger.id not in [t.id for t in project.triggers.list(get_all=True)]
report["trigger_id"] = trigger.id

step("CI/CD variables: create, get, update")
variable = project.variables.create({"key": "PY_CLIENT_VAR", "value": "first-value-1"})
assert variable.key == "PY_CLIENT_VAR"
variable = project.variables.get("PY_CLIENT_VAR")
assert variable.value == "first-value-1"
variable.value = "second-value-2"
variable.save()
project.variables.update("PY_CLIENT_VAR", {"value": "third-value-3", "masked": True})
variable = project.variables.get("PY_CLIENT_VAR")
assert variable.value == "third-value-3" and variable.masked

step("project hooks: list, create, test, delete")
before = project.hooks.list(get_all=True)
hook = project.hooks.create({"url": "https://hooks.example/python", "token": "hook-secret-1"})
assert not hasattr(hook, "token") or hook.token is None, "a hook's token is never returned"
after = project.hooks.list(get_all=True)
assert len(after) == len(before) + 1, "the new hook is not listed"
# What test_hook sends: POST .../hooks/:id/test/:trigger; raises on anything
# but the 201 GitLab answers when the receiver accepted the delivery.
hook.test("push_events")
hook.delete()
assert hook.id not in [h.id for h in project.hooks.list(get_all=True)]
report["hook_id"] = hook.id

print(json.dumps(report))
