//! Online reinforcement learning (`spec/thesis-models.md` §8, thesis Ch.7): simulated users
//! ([`env`]), agents that act in them (DQN, REINFORCE, A2C, iALP, A-iALP), a preference judge
//! that distils a language model's choices into iALP's pre-training ([`judge`]), and the online
//! loop with its learning curves ([`plot`]).

pub mod env;
pub mod judge;
pub mod plot;
