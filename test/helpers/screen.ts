/**
 * A minimal terminal for tests: replays what a program wrote (text, newlines, carriage returns
 * and the cursor/erase escapes readline and cli-progress use) onto a grid of lines and returns
 * what the screen shows, as `tmux capture-pane` would. No wrapping: a line is as long as written.
 */
export function screen(output: string): string[] {
  const lines: string[] = [""];
  let row = 0;
  let col = 0;
  const put = (ch: string) => {
    const line = (lines[row] ?? "").padEnd(col, " ");
    lines[row] = line.slice(0, col) + ch + line.slice(col + 1);
    col++;
  };
  // biome-ignore lint/suspicious/noControlCharactersInRegex: terminal escape sequences
  const tokens = output.match(/\x1b\[\??[0-9;]*[A-Za-z]|\x1b[78]|[\s\S]/g) ?? [];
  for (const t of tokens) {
    if (t === "\n") {
      row++;
      col = 0;
      lines[row] ??= "";
    } else if (t === "\r") col = 0;
    else if (t.startsWith("\x1b[")) {
      const m = /^.\[(\??)([0-9;]*)([A-Za-z])$/.exec(t) as RegExpExecArray;
      const n = Number(m[2] || "0");
      const op = m[3];
      if (m[1] === "?") continue; // cursor visibility, line wrapping
      if (op === "G") col = Math.max(0, (n || 1) - 1);
      else if (op === "A") row = Math.max(0, row - (n || 1));
      else if (op === "B") row += n || 1;
      else if (op === "K") {
        const line = lines[row] ?? "";
        lines[row] = n === 2 ? "" : n === 1 ? " ".repeat(col) + line.slice(col) : line.slice(0, col);
      } else if (op === "J") {
        lines[row] = (lines[row] ?? "").slice(0, col);
        lines.length = row + 1;
      }
    } else if (!t.startsWith("\x1b")) put(t);
  }
  return lines.map((l) => l.trimEnd());
}
