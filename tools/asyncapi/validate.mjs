// Validate an AsyncAPI document with the official parser:
//
//   node tools/asyncapi/validate.mjs schemas/asyncapi.yaml
//
// The parser applies the same Spectral ruleset as `asyncapi validate` (the
// CLI is this parser plus a few hundred MB of other commands). The file is
// parsed from disk with its path as the source, so relative `$ref`s (the
// committed JSON Schemas under schemas/json-schema/) are resolved and
// checked too: a reference to a missing file is an error, not a skip.
//
// Every diagnostic is printed as `severity path: message [code]`. The exit
// status is 1 when any is an error or a warning (the committed document is
// kept free of both, so a new warning is a regression rather than noise),
// 2 on usage or I/O problems, 0 otherwise; info and hint lines only print.
import { existsSync } from "node:fs";
import { resolve } from "node:path";

import { Parser, fromFile } from "@asyncapi/parser";

// Spectral's DiagnosticSeverity: the index is the numeric severity.
const SEVERITIES = ["error", "warning", "info", "hint"];
const FAILING = new Set(["error", "warning"]);

async function main(argv) {
  if (argv.length !== 1) {
    console.error("usage: node validate.mjs <asyncapi file>");
    return 2;
  }
  const source = resolve(argv[0]);
  if (!existsSync(source)) {
    console.error(`${argv[0]}: no such file`);
    return 2;
  }
  const parser = new Parser();
  const { document, diagnostics } = await fromFile(parser, source).parse();
  let failing = 0;
  for (const diagnostic of diagnostics) {
    const severity = SEVERITIES[diagnostic.severity] ?? `severity-${diagnostic.severity}`;
    const path = diagnostic.path.length ? diagnostic.path.join(".") : "<root>";
    console.log(`${severity} ${path}: ${diagnostic.message} [${diagnostic.code}]`);
    if (FAILING.has(severity)) failing += 1;
  }
  // The parser returns no document when it could not build one, even if
  // (in some failure modes) it reported nothing at error severity.
  if (document === undefined && failing === 0) {
    console.log("error <root>: the parser produced no document [no-document]");
    failing = 1;
  }
  const verdict = failing ? `${failing} errors or warnings` : "valid";
  console.log(`${argv[0]}: ${verdict} (${diagnostics.length} diagnostics)`);
  return failing ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2)).catch((error) => {
  console.error(`validate.mjs: ${error?.stack ?? error}`);
  return 2;
});
