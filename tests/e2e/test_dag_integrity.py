from millet.orchestrate import DAG_ID, load_dag


def test_dag_folder_imports_cleanly_and_wires_the_expected_graph():
    dag = load_dag()  # raises if the folder has any import error
    assert dag.dag_id == DAG_ID
    edges = {(up, down) for down in dag.task_ids for up in dag.get_task(down).upstream_task_ids}
    assert edges == {
        ("list_channels", "ingest_channel"),
        ("ingest_consent", "ingest_channel"),
        ("ingest_channel", "build_features"),
        ("build_features", "check_features"),
        ("check_features", "publish_features"),
    }
    assert dag.timetable.expression == "0 0 * * *"  # @daily
    assert not dag.catchup
    assert all(dag.get_task(t).retries == 0 for t in dag.task_ids)  # tests set MILLET_TASK_RETRIES=0
