//! `pier completions` and `pier man`: generated from the command line's
//! own definitions, so they never disagree with `--help`.

use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::Cli;

pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "pier", &mut std::io::stdout());
    ExitCode::SUCCESS
}

pub fn man(dir: Option<std::path::PathBuf>) -> ExitCode {
    let command = Cli::command();
    let written = match dir {
        None => clap_mangen::Man::new(command).render(&mut std::io::stdout()),
        Some(dir) => {
            std::fs::create_dir_all(&dir).and_then(|()| clap_mangen::generate_to(command, &dir))
        }
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write the manual: {e}");
            ExitCode::from(2)
        }
    }
}
