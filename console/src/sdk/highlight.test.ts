import { describe, expect, it } from "vitest";
import { parseHighlight, unescapeHtml } from "./highlight";

describe("parseHighlight", () => {
  it("splits hits from text", () => {
    expect(parseHighlight("我们的<em>消息</em>到了")).toEqual([
      { text: "我们的", hit: false },
      { text: "消息", hit: true },
      { text: "到了", hit: false },
    ]);
  });

  it("keeps escaped markup as literal text, never as elements", () => {
    const segments = parseHighlight("&lt;img src=x onerror=alert(1)&gt; <em>hello</em> &amp;amp; &quot;q&quot; &#39;s&#x27;");
    expect(segments).toEqual([
      { text: "<img src=x onerror=alert(1)> ", hit: false },
      { text: "hello", hit: true },
      { text: ' &amp; "q" \'s\'', hit: false },
    ]);
  });

  it("tolerates unbalanced or stray tags and unknown entities", () => {
    expect(parseHighlight("a</em>b<em>c")).toEqual([
      { text: "ab", hit: false },
      { text: "c", hit: true },
    ]);
    expect(parseHighlight("<b>x</b> &bogus; &#0; &#xD800;")).toEqual([{ text: "<b>x</b> &bogus; &#0; &#xD800;", hit: false }]);
    expect(parseHighlight("")).toEqual([]);
  });

  it("merges adjacent hits and keeps the fragment ellipsis", () => {
    expect(parseHighlight("…<em>a</em><em>b</em>…")).toEqual([
      { text: "…", hit: false },
      { text: "ab", hit: true },
      { text: "…", hit: false },
    ]);
    expect(unescapeHtml("&#128029;")).toBe("🐝");
  });
});
