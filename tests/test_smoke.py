def test_publish_then_read(cli, db):
    r = cli(
        "publish", "login", "--stream", "alice", "--data", '{"username": "alice"}', "-o", "json"
    )
    assert r.exit_code == 0, r.stderr
