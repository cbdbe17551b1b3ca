//! Online reinforcement learning (`spec/thesis-models.md` §8, thesis Ch.7): simulated users
//! ([`mod@env`]: Coat with a [`deepfm`] user model in [`coat`], the sequential simulators of
//! [`seqsim`]), agents that act in them ([`agent`]: DQN, REINFORCE, A2C, iALP, A-iALP), a
//! preference judge that distils a language model's choices into iALP's pre-training
//! ([`judge`]), and the online loop ([`run`]) with its learning curves ([`plot`]).

pub mod agent;
pub mod coat;
pub mod deepfm;
pub mod env;
pub mod judge;
pub mod plot;
pub mod run;
pub mod seqsim;
