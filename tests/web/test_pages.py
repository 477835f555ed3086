"""The dashboard's pages through FastAPI's TestClient: every page answers, forms need the CSRF
token and this site's origin, the token rule holds for pages (login cookie), multipart uploads
are received inside the workspace only, and deletes and restores need their confirmation."""

from __future__ import annotations

import re
import time

import pytest
from fastapi.testclient import TestClient

from tests.conftest import copy_of_demo
from tests.web.conftest import demo_file, uploads_left
from web.server import API, create_app
from web.tokens import new_token

LOCAL = "http://127.0.0.1:8765"
PAGE = {"accept": "text/html"}


def _csrf(client: TestClient, path: str = "/train") -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path, headers=PAGE).text)[1]


def _wait(client: TestClient, job_id: str, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        view = client.get(f"{API}/jobs/{job_id}").json()
        if view["state"] not in ("pending", "running"):
            return view
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still running after {timeout} s")


def test_every_page_answers_and_unknown_names_are_a_page_not_a_traceback(trained) -> None:
    client = TestClient(create_app(trained), base_url=LOCAL)
    for path in ("/", "/datasets/demo", "/train", "/train?dataset=demo", "/runs/predictor", "/checkpoints",
                 "/predict", "/backups", "/system", "/static/htmx-2.0.11.min.js", "/static/LICENSE-htmx.txt",
                 "/datasets/demo/statistics.png", "/api/v1/openapi.json"):
        answer = client.get(path, headers=PAGE)
        assert answer.status_code == 200, (path, answer.text[:300])
    overview = client.get("/", headers=PAGE).text
    assert "predictor" in overview and "demo" in overview and "verdict" in overview
    report = client.get("/runs/predictor", headers=PAGE).text
    training = report[report.index('id="settings-training"'):]
    assert re.search(r"<td>epochs</td><td class=\"num\">1</td>\s*<td[^>]*>user</td>", training), \
        "the report shows each setting by layer, with where it came from"
    for path, status in (("/runs/nope", 404), ("/datasets/nope", 404), ("/runs/..%2F..%2Fetc", 400),
                         ("/runs/predictor/plots/..%2Fmetadata.json", 400), ("/jobs/nope", 404),
                         ("/predictions/..%2F..%2Fdata/x.png", 400)):
        answer = client.get(path, headers=PAGE)
        assert answer.status_code in (status, 404), (path, answer.status_code)
        assert "Traceback" not in answer.text and "<html" in answer.text, path
    assert client.get("/runs/nope").headers["content-type"].startswith("application/json")  # scripts get JSON


def test_the_run_page_shows_each_fit_of_a_time_limited_plan(trained) -> None:
    from app.runs import Run

    path = trained.run_dir("predictor") / "metadata.json"
    before = path.read_bytes()
    try:
        Run(trained, "predictor").merge(time_plan=[
            {"after_epoch": 3, "seconds_per_epoch": 20.1, "seconds_left": 940.0, "epochs": 47},
            {"after_epoch": 12, "seconds_per_epoch": 5.2, "seconds_left": 895.5, "epochs": 173}])
        page = TestClient(create_app(trained), base_url=LOCAL).get("/runs/predictor", headers=PAGE).text
        table = page[page.index('id="time-plan"'):page.index("</table>", page.index('id="time-plan"'))]
        cells = re.findall(r'<td class="num">([^<]*)</td>', table)
        assert cells == ["3", "20.1", "940.0", "47", "12", "5.2", "895.5", "173"]
    finally:
        path.write_bytes(before)
    assert 'id="time-plan"' not in TestClient(create_app(trained), base_url=LOCAL).get("/runs/predictor", headers=PAGE).text


def test_forms_need_the_csrf_token_and_this_site_as_origin(trained) -> None:
    client = TestClient(create_app(trained), base_url=LOCAL)
    form = {"dataset": "demo", "phase": "supervised", "recipe": "fixed", "epochs": "1", "image_size": "32",
            "backbone": "resnet10t"}
    assert client.post("/train", data=form, headers=PAGE).status_code == 403  # no token
    assert client.post("/train", data={**form, "csrf_token": "forged"}, headers=PAGE).status_code == 403
    token = _csrf(client)
    foreign = client.post("/train", data={**form, "csrf_token": token},
                          headers={**PAGE, "Origin": "http://evil.example"}, follow_redirects=False)
    assert foreign.status_code == 403
    assert client.get(f"{API}/jobs").json() == []  # nothing started by any of them
    started = client.post("/train", data={**form, "csrf_token": token},
                          headers={**PAGE, "Origin": LOCAL}, follow_redirects=False)
    assert started.status_code == 303 and started.headers["location"].startswith("/jobs/")
    job = started.headers["location"].rsplit("/", 1)[1]
    assert _wait(client, job)["state"] == "finished"
    watch = client.get(f"/jobs/{job}", headers=PAGE).text
    assert 'id="metric-chart"' in watch and 'data-points="1"' in watch and "Open the run" in watch
    another = TestClient(create_app(trained), base_url=LOCAL)  # a restarted server: old forms are out of date
    stale = another.post("/train", data={**form, "csrf_token": token}, headers=PAGE)
    assert stale.status_code == 403 and "reload the page" in stale.text


def test_off_loopback_pages_need_the_token_given_once_at_login(trained) -> None:
    token = new_token(trained)
    client = TestClient(create_app(trained, require_token=True), base_url="http://workstation.example:8765")
    to_login = client.get("/", headers=PAGE, follow_redirects=False)
    assert to_login.status_code == 303 and to_login.headers["location"] == "/login"
    assert client.get("/login", headers=PAGE).status_code == 200
    assert client.post("/login", data={"token": "wrong"}, headers=PAGE).status_code == 401
    signed_in = client.post("/login", data={"token": token}, headers=PAGE, follow_redirects=False)
    assert signed_in.status_code == 303
    cookie = signed_in.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/", headers=PAGE).status_code == 200  # the cookie now travels with each request
    assert client.get(f"{API}/runs").status_code == 200
    assert TestClient(create_app(trained, require_token=True)).get(f"{API}/runs").status_code == 401


def test_a_multipart_upload_is_predicted_by_page_and_api_and_nothing_stays(trained) -> None:
    client = TestClient(create_app(trained), base_url=LOCAL)
    image = demo_file(trained, ".png")
    token = _csrf(client, "/predict")
    page = client.post("/predict", headers=PAGE, data={"csrf_token": token, "run": "predictor", "allow_ood": "on"},
                       files={"file": ("Doe_Jane_1960.png", image.read_bytes(), "image/png")})
    assert page.status_code == 200, page.text[:500]
    assert 'id="answers"' in page.text and "Doe_Jane" not in page.text and "predictor" in page.text
    overlay = re.search(r'src="(/predictions/[^"]+\.png)"', page.text)
    assert overlay and client.get(overlay[1]).headers["content-type"] == "image/png"
    api = client.post(f"{API}/predict", params={"run": "predictor", "allow_ood": "true"},
                      files={"file": ("Doe_Jane_1960.PNG", image.read_bytes(), "image/png")})
    assert api.status_code == 200 and api.json()["predictions"][0]["run"] == "predictor"
    assert "Doe_Jane" not in api.text and uploads_left(trained) == []
    no_csrf = client.post("/predict", headers=PAGE, files={"file": ("x.png", image.read_bytes(), "image/png")})
    assert no_csrf.status_code == 403 and uploads_left(trained) == []


@pytest.mark.parametrize("files, status", [
    ({"file": ("scan.exe", b"MZ", "application/octet-stream")}, 400),
    ({"file": ("scan.png", b"", "image/png")}, 400),
    ({"other": ("a.png", b"1", "image/png"), "file": ("b.png", b"2", "image/png")}, 400),
    ({"file": ("big.png", b"\0" * 5000, "image/png")}, 413),
])
def test_multipart_uploads_refused_leave_nothing(trained, files, status) -> None:
    client = TestClient(create_app(trained, upload_limit=1000), base_url=LOCAL)
    answer = client.post(f"{API}/predict", files=files)
    assert answer.status_code == status, answer.text
    assert uploads_left(trained) == []


def test_a_malformed_multipart_body_is_one_clear_line(trained) -> None:
    client = TestClient(create_app(trained), base_url=LOCAL)
    answer = client.post(f"{API}/predict", content=b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; "
                                                    b"filename=\"a.png\"\r\n\r\nabc\r\n--xy",
                         headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert answer.status_code == 400 and "detail" in answer.json()
    assert uploads_left(trained) == []


def test_a_run_is_deleted_only_when_its_name_is_typed(trained, tmp_path) -> None:
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from app.workspace import Workspace

    from app.runs import Run

    shutil.copytree(trained.root, tmp_path / "ws", symlinks=True)
    ws = Workspace.open(tmp_path / "ws")
    for copy, of in (("predictor-trial0", "predictor"), ("other-trial0", "other")):  # hidden runs of a search
        shutil.copytree(ws.run_dir("predictor"), ws.run_dir(copy))
        Run(ws, copy).merge(run=copy, trial_of=of)
    client = TestClient(create_app(ws), base_url=LOCAL)
    token = _csrf(client, "/checkpoints")
    assert client.post("/runs/predictor/delete", data={"csrf_token": token, "confirm": "predict"},
                       headers=PAGE).status_code == 400
    assert ws.run_dir("predictor").exists()
    holder = subprocess.Popen([sys.executable, "-c", (  # another process training it: the lock is held
        "import sys, time; sys.path.insert(0, %r)\nfrom app.workspace import Workspace\n"
        "with Workspace.open(%r).lock('run', 'predictor'):\n    print('held', flush=True); time.sleep(60)\n")
        % (str(Path(__file__).parents[2]), str(ws.root))], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        busy = client.post("/runs/predictor/delete", data={"csrf_token": token, "confirm": "predictor"},
                           headers=PAGE)
        assert busy.status_code == 409 and "Busy" in busy.text and ws.run_dir("predictor").exists()
    finally:
        holder.kill()
        holder.wait()
    gone = client.post("/runs/predictor/delete", data={"csrf_token": token, "confirm": "predictor"},
                       headers=PAGE, follow_redirects=False)
    assert gone.status_code == 303 and not ws.run_dir("predictor").exists()
    assert not ws.run_dir("predictor-trial0").exists(), "its search's hidden runs go with it"
    assert ws.run_dir("other-trial0").exists(), "another search's stay"
    assert "predictor" not in client.get("/checkpoints", headers=PAGE).text


def test_backups_are_made_and_restored_from_the_dashboard_and_the_api(trained, tmp_path) -> None:
    import shutil

    from app.backup import tree_hashes
    from app.workspace import Workspace

    shutil.copytree(trained.root, tmp_path / "ws", symlinks=True)
    ws = Workspace.open(tmp_path / "ws")
    client = TestClient(create_app(ws), base_url=LOCAL)
    token = _csrf(client, "/backups")
    made = client.post("/backups", data={"csrf_token": token}, headers=PAGE, follow_redirects=False)
    assert made.status_code == 303
    assert _wait(client, made.headers["location"].rsplit("/", 1)[1])["state"] == "finished"
    [found] = client.get(f"{API}/backups").json()
    before = tree_hashes(ws)
    (ws.run_dir("predictor") / "metadata.json").write_text("{}")
    refused = client.post("/backups/restore", data={"csrf_token": token, "name": found["name"], "confirm": ""},
                          headers=PAGE)
    assert refused.status_code == 400 and tree_hashes(ws) != before
    assert client.post(f"{API}/jobs/restore", json={"name": "../../etc/passwd"}).status_code == 422
    assert client.post(f"{API}/jobs/restore", json={"name": "medanomaly-backup-nope.tar"}).status_code == 404
    job = client.post(f"{API}/jobs/restore", json={"name": found["name"]}).json()["id"]
    assert _wait(client, job)["state"] == "finished" and tree_hashes(ws) == before


def test_a_searched_runs_page_shows_every_trial_and_the_chosen_recipe(trained, tmp_path) -> None:
    import shutil

    from app.runs import Run
    from app.workspace import Workspace

    shutil.copytree(trained.root, tmp_path / "ws", symlinks=True)
    ws = Workspace.open(tmp_path / "ws")
    Run(ws, "predictor").merge(recipe={"name": "r10t-64", "backbone": "resnet10t", "image_size": 64},
                               trials=[{"recipe": "r10t-64", "run": "t0", "epochs": 4, "val_monitor": 0.91, "seconds": 30.5},
                                       {"recipe": "b0-64", "run": "t1-round1", "round": 1, "epochs": 2,
                                        "val_monitor": 0.875, "seconds": 31.0}])
    page = TestClient(create_app(ws), base_url=LOCAL).get("/runs/predictor", headers=PAGE).text
    table = page[page.index('id="trials"'):page.index("</table>", page.index('id="trials"'))]
    assert "Recipe: r10t-64 (chosen on the validation split)" in page
    assert re.search(r"r10t-64 <b>\(chosen\)</b></td>\s*<td class=\"num\">4</td><td class=\"num\">0.9100</td>", table)
    assert '<td class="num">1</td><td>b0-64</td>' in table and "0.8750" in table, "its round of successive halving"
    assert "successive halving" in page
    assert 'id="members"' not in page, "no members: no table"
    Run(ws, "predictor").merge(ensemble={
        "runs": ["predictor-member0", "predictor-member2"], "averaged_in": "predictor", "val_auc_alone": 0.9, "val_auc": 0.93,
        "members": [{"member": "predictor-member1", "recipe": "r10t-64", "seed": 1, "val_auc_before": 0.9,
                     "val_auc_with": 0.89, "kept": False, "seconds": 12.0},
                    {"member": "predictor-member2", "recipe": "r10t-64", "seed": 2, "val_auc_before": 0.9,
                     "val_auc_with": 0.93, "kept": True, "seconds": 11.0}]})
    page = TestClient(create_app(ws), base_url=LOCAL).get("/runs/predictor", headers=PAGE).text
    members = page[page.index('id="members"'):page.index("</section>", page.index('id="members"'))]
    assert re.search(r"predictor-member1</td><td>r10t-64</td><td class=\"num\">1</td>\s*<td class=\"num\">0.9000</td>"
                     r"<td class=\"num\">0.8900</td><td>no</td>", members)
    assert "This run is the average of 2 models" in members and "0.9300 averaged" in members
    assert 'id="mirror"' not in page, "no mirror decided: nothing said"
    Run(ws, "predictor").merge(ensemble={**ws.run_metadata("predictor")["ensemble"],
                                         "mirror": {"val_auc_single": 0.93, "val_auc_mirrored": 0.94, "kept": True}})
    page = TestClient(create_app(ws), base_url=LOCAL).get("/runs/predictor", headers=PAGE).text
    assert re.search(r'id="mirror">Mirror view: the model averages each image with its left-right mirror \(validation AUC '
                     r"0.9300 on the images as given, 0.9400 averaged", page)
    dropped = ws.run_metadata("predictor")["ensemble"]
    Run(ws, "predictor").merge(ensemble={**dropped, "runs": ["predictor-member0"],
                                         "members": [{**m, "kept": False} for m in dropped["members"]]})
    page = TestClient(create_app(ws), base_url=LOCAL).get("/runs/predictor", headers=PAGE).text
    assert "No member was kept: this run is the winner, averaged with its mirror (below)." in page
    # A run searched before successive halving: no round in its trials, so no round column and no halving sentence.
    Run(ws, "predictor").merge(trials=[{"recipe": "r10t-64", "run": "t0", "epochs": 4, "val_monitor": 0.91, "seconds": 30.5}])
    page = TestClient(create_app(ws), base_url=LOCAL).get("/runs/predictor", headers=PAGE).text
    table = page[page.index('id="trials"'):page.index("</section>", page.index('id="trials"'))]
    assert "<th>round</th>" not in table and "successive halving" not in table and "equal share" in table
    assert re.search(r"<tr><td>r10t-64 <b>\(chosen\)</b></td>", table)
    assert 'id="flips"' not in page, "flipped as usual: nothing said"
    Run(ws, "predictor").merge(flips={"setting": "auto", "used": False,
                                      "mirror_pairs": [{"classes": ["kidney-left", "kidney-right"], "ratio": 0.1}]})
    page = TestClient(create_app(ws), base_url=LOCAL).get("/runs/predictor", headers=PAGE).text
    assert re.search(r'id="flips">Trained without left-right flips: left and right tell its classes apart \(mirrored, '
                     r"the training images of one class look like another&#39;s: kidney-left / kidney-right\)", page)


def test_a_correction_from_the_dataset_page_reorganizes_the_dataset(demo, tmp_path) -> None:
    from app.organize.review import review_groups

    ws = copy_of_demo(demo, tmp_path / "ws")
    client = TestClient(create_app(ws), base_url=LOCAL)
    page = client.get("/datasets/demo", headers=PAGE).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)[1]
    folder = re.search(r'name="folder" value="([^"]+)"', page)[1]
    assert client.post("/datasets/demo/correct", data={"folder": folder, "field": "region", "value": "abdomen"},
                       headers=PAGE).status_code == 403  # no token: nothing recorded
    bad = client.post("/datasets/demo/correct", data={"csrf_token": token, "folder": folder, "field": "patient",
                                                      "value": "x"}, headers=PAGE)
    assert bad.status_code == 422 and "can be corrected" in bad.text
    done = client.post("/datasets/demo/correct", data={"csrf_token": token, "folder": folder, "field": "region",
                                                       "value": "abdomen"}, headers=PAGE, follow_redirects=False)
    assert done.status_code == 303
    assert _wait(client, done.headers["location"].rsplit("/", 1)[1])["state"] == "finished"
    [group] = [g for g in review_groups(ws, "demo") if g.folder == folder]
    assert group.region == "abdomen"


def test_a_backup_is_started_and_listed_through_the_api(trained, tmp_path) -> None:
    import shutil

    from app.workspace import Workspace

    shutil.copytree(trained.root, tmp_path / "ws", symlinks=True)
    client = TestClient(create_app(Workspace.open(tmp_path / "ws")), base_url=LOCAL)
    started = client.post(f"{API}/jobs/backup", json={"raw": False})
    assert started.status_code == 202 and _wait(client, started.json()["id"])["state"] == "finished"
    [made] = client.get(f"{API}/backups").json()
    assert made["name"].startswith("medanomaly-backup-") and made["raw"] is False and made["files"] > 0
