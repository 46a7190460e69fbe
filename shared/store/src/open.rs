//! Open the state store `[state]` names: the SQLite database of the data directory or a
//! PostgreSQL pool.

#[cfg(feature = "postgres")]
use crate::postgres::Postgres;
use crate::sqlite::Sqlite;
use crate::state::AnyState;
use gatehouse_domain::ports::BackendError;
#[cfg(feature = "postgres")]
use gatehouse_platform::config::PostgresConfig;
use gatehouse_platform::config::{Config, ConfigError, StateConfig};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// The processor's state store as configured: the SQLite database `sqlite` (also the embedded
/// queue's), or a PostgreSQL pool.
pub async fn open_state(cfg: &Config, sqlite: &Sqlite) -> Result<AnyState, OpenError> {
    Ok(match &cfg.state {
        StateConfig::Sqlite => AnyState::Sqlite(sqlite.clone()),
        #[cfg(feature = "postgres")]
        StateConfig::Postgres(p) => AnyState::Postgres(connect_postgres(p).await?),
        #[cfg(not(feature = "postgres"))]
        StateConfig::Postgres(_) => return Err(crate::backends::POSTGRES.missing().into()),
    })
}

/// The state store alone, for what needs nothing else of the data directory (the rotator,
/// `gatehouse rotate`): PostgreSQL without opening SQLite, else the SQLite database.
pub async fn open_state_alone(cfg: &Config) -> Result<AnyState, OpenError> {
    Ok(match &cfg.state {
        StateConfig::Sqlite => AnyState::Sqlite(Sqlite::open(&cfg.data_dir).await?),
        #[cfg(feature = "postgres")]
        StateConfig::Postgres(p) => AnyState::Postgres(connect_postgres(p).await?),
        #[cfg(not(feature = "postgres"))]
        StateConfig::Postgres(_) => return Err(crate::backends::POSTGRES.missing().into()),
    })
}

#[cfg(feature = "postgres")]
async fn connect_postgres(p: &PostgresConfig) -> Result<Postgres, OpenError> {
    let url = p
        .url
        .as_ref()
        .ok_or_else(|| ConfigError::new("state.url (GATEHOUSE_DATABASE_URL)", "is required for postgres"))?;
    Ok(Postgres::connect(url, p.max_connections).await?)
}
