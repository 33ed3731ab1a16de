"""A second driver thread's jobs in their own fair-scheduler pool are not queued behind the first's.

The train job fits its baseline while the network featurizes; this is what lets
the baseline's one-task jobs take slots between the featurizer's tasks.
"""
import threading
import time

from conftest import classic_only


@classic_only("thread-local scheduler pools (the Connect server schedules)")
def test_a_pooled_job_runs_between_the_tasks_of_a_long_job(spark):
    from covidspark.runtime.connect import SCHEDULER_POOL, scheduler_pool

    context = spark.sparkContext
    assert spark.conf.get("spark.scheduler.mode") == "FAIR"  # get_spark's default
    long_tasks, started = 30, threading.Event()

    def long_job():
        context.setJobGroup("long-job", "30 tasks of 0.3 s")
        started.set()
        context.parallelize(range(long_tasks), long_tasks).foreach(lambda _: time.sleep(0.3))

    thread = threading.Thread(target=long_job)
    thread.start()
    started.wait()
    time.sleep(1.0)  # the long job holds both slots of local[2], its other tasks queued
    with scheduler_pool(spark, "test-pool"):
        assert context.getLocalProperty(SCHEDULER_POOL) == "test-pool"
        assert context.parallelize([1, 2], 1).sum() == 3
    assert context.getLocalProperty(SCHEDULER_POOL) is None  # restored

    tracker = context.statusTracker()
    (job_id,) = tracker.getJobIdsForGroup("long-job")
    (stage_id,) = tracker.getJobInfo(job_id).stageIds
    done_when_pooled_job_ended = tracker.getStageInfo(stage_id).numCompletedTasks
    thread.join()
    # In FIFO order the pooled job would have waited for all 30 tasks to be launched
    # (28 or more completed); fair sharing gave it the first slot that freed.
    assert done_when_pooled_job_ended <= long_tasks // 2, done_when_pooled_job_ended
