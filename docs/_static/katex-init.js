// Typeset every \( \) and \[ \] that Sphinx wrote for a math node (and $ $ left by notebook outputs) with the
// bundled KaTeX; errors render in red in place (throwOnError: false) and never stop the page.
document.addEventListener("DOMContentLoaded", function () {
  renderMathInElement(document.body, {
    delimiters: [
      {left: "\\[", right: "\\]", display: true},
      {left: "$$", right: "$$", display: true},
      {left: "\\(", right: "\\)", display: false},
    ],
    throwOnError: false,
    strict: "ignore",
    ignoredClasses: ["highlight", "sig", "literal-block"],
  });
});
