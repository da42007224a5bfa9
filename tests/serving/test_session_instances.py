"""The live-session limit is per instance and scales with the instance count, through a REAL tritonserver:
2 session instances x 1 session each hold 2 sessions; further STARTs are refused by the model (Triton's
slots stay above the limit: ``max_candidate_sequences`` is per instance too) and no live session is
evicted; END frees a place at once. Its own small server (session model only, tiny bundle)."""

from __future__ import annotations

import pytest

from serving.client import SessionClient
from serving.server import TritonServer
from serving.triton_repo import build_repository, read_model_config
from tests.serving.conftest import assert_starts_refused

pytestmark = pytest.mark.slow  # server start + two instance loads + a few chunks: ~30 s on 2 cores

INSTANCES, PER_INSTANCE = 2, 1


@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("instances")
    repo = build_repository(bundle[0], root / "repo", loader=bundle[1], models=("session",),
                            instance_count=INSTANCES, max_sessions=PER_INSTANCE, spare_slots=1, idle_timeout_s=30,
                            session_mode="few_step")
    with TritonServer(repo, log_file=root / "server.log", ready_timeout_s=240) as srv:
        yield srv


def test_server_holds_instances_times_the_per_instance_limit(server, first_frame):
    params = read_model_config(server.repo_dir / "sana_wm_session").parameters
    assert params["max_live_sessions"].string_value == str(INSTANCES * PER_INSTANCE)
    live = [SessionClient(server.grpc_url) for _ in range(INSTANCES * PER_INSTANCE)]
    try:
        for s in live:  # one per instance: a limit of 1 per instance does not cap the server at 1
            assert s.start(first_frame, action="w")[0] == 0
        assert_starts_refused(  # more refused STARTs than the spare slots of both instances
            server.grpc_url, first_frame,
            f"session limit reached: {PER_INSTANCE} of {PER_INSTANCE} sessions are live "
            f"\\(per instance; {INSTANCES} instances hold {INSTANCES * PER_INSTANCE} in all\\)")
        for s in live:  # no live session was evicted
            assert s.step(action="d")[0] == 1
        live[0].end()
        fresh = SessionClient(server.grpc_url)
        assert fresh.start(first_frame, action="w")[0] == 0  # END freed its instance's place at once
        assert fresh.step(action="w")[0] == 1 and live[1].step(action="w")[0] == 2
        fresh.close()
    finally:
        for s in live:
            s.close()
