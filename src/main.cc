// The gantry binary: flag parsing and wiring live in cli/ and api/server_main.
#include "cli/cli.h"

int main(int argc, char** argv) { return gantry::cli::Main(argc, argv); }
