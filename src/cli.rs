//! Admin commands added beside `migrate_cli` (which keeps migrate, rollback,
//! verify and the local status): `plan` and the fleet `status`.

pub mod fleet;
pub mod plan;
