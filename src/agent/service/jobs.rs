//! The executor's thread, and the jobs the facade sends it.

use tokio::sync::oneshot;

use crate::agent::executor::{
    Deleted, ExecError, Executor, IsolateArgs, Isolated, PrepareArgs, Prepared, TeardownError,
};
use crate::agent::record::Record;
use crate::agent::sys::{Process, Sys};
use crate::contract::AgentError;
use crate::plan::settings::NetnsName;
use crate::plan::IsolationPlan;
use crate::report::chain;

/// Work for the executor thread. The executor calls `setns` on threads it spawns itself, so it
/// must never run on a tokio worker; one thread owns it and serialises every change.
pub(super) enum Job {
    Prepare(
        Box<PrepareArgs>,
        oneshot::Sender<Result<Prepared, ExecError>>,
    ),
    Isolate(
        Box<IsolateArgs>,
        oneshot::Sender<Result<Isolated, ExecError>>,
    ),
    Reapply(Box<IsolationPlan>, oneshot::Sender<Result<(), ExecError>>),
    /// Answered with the processes the release stranded in the namespace it deleted. A lease
    /// still prepared (`true`) is undone as [`Executor::unprepare`] says.
    Release(
        NetnsName,
        bool,
        oneshot::Sender<Result<Vec<Process>, TeardownError>>,
    ),
    /// Answered with every record.
    List(oneshot::Sender<Vec<Record>>),
    /// A namespace to delete, and whether to end the processes in it.
    Delete(NetnsName, bool, oneshot::Sender<Result<Deleted, ExecError>>),
}

/// Where the executor's outcome of a queued job comes.
pub(super) type Answer<T> = oneshot::Receiver<Result<T, ExecError>>;

#[derive(Clone)]
pub(super) struct ExecutorHandle(std::sync::mpsc::Sender<Job>);

impl ExecutorHandle {
    pub(super) fn spawn<S: Sys + Send + 'static>(
        mut executor: Executor<S>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("executor".into())
            .spawn(move || {
                for job in rx {
                    // A caller that gave up is no reason to stop; its lease is released apart.
                    match job {
                        Job::Prepare(req, reply) => drop(reply.send(executor.prepare(&req))),
                        Job::Isolate(req, reply) => drop(reply.send(executor.isolate(&req))),
                        Job::Reapply(plan, reply) => {
                            drop(reply.send(executor.reapply(&plan.netns, &plan)))
                        }
                        Job::Release(ns, prepared, reply) => {
                            let stranded = executor.stranded(&ns);
                            let released = if prepared {
                                executor.unprepare(&ns)
                            } else {
                                executor.release(&ns)
                            };
                            drop(reply.send(released.map(|()| stranded)))
                        }
                        Job::List(reply) => drop(reply.send(executor.records().cloned().collect())),
                        Job::Delete(ns, force, reply) => {
                            drop(reply.send(executor.delete(&ns, force)))
                        }
                    }
                }
            })?;
        Ok(ExecutorHandle(tx))
    }

    /// Queues the preparation of `req`.
    pub(super) fn prepare(&self, req: PrepareArgs) -> Result<Answer<Prepared>, AgentError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Prepare(Box::new(req), tx))?;
        Ok(rx)
    }

    /// Queues the isolation of `req`.
    pub(super) fn isolate(&self, req: IsolateArgs) -> Result<Answer<Isolated>, AgentError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Isolate(Box::new(req), tx))?;
        Ok(rx)
    }

    pub(super) async fn reapply(&self, plan: IsolationPlan) -> Result<(), AgentError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Reapply(Box::new(plan), tx))?;
        Ok(rx.await.map_err(|_| executor_gone())??)
    }

    /// Releases `netns`, whose lease is still `prepared` or not.
    pub(super) async fn release(
        &self,
        netns: NetnsName,
        prepared: bool,
    ) -> Result<Vec<Process>, AgentError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Release(netns, prepared, tx))?;
        rx.await
            .map_err(|_| executor_gone())?
            .map_err(|e| AgentError::Failed(chain(&e)))
    }

    pub(super) fn send(&self, job: Job) -> Result<(), AgentError> {
        self.0.send(job).map_err(|_| executor_gone())
    }
}

pub(super) fn executor_gone() -> AgentError {
    AgentError::Failed("the agent's executor thread has stopped".into())
}
