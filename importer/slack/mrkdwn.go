package slack

import (
	"html"
	"strings"

	"enclave/importer"
)

// Render implements importer.Source for Slack's mrkdwn: <@U…> mentions
// become Matrix pills, <#C…|name> channel names, <url|label> links;
// *bold*, _italic_, ~strike~, `code`, ```blocks``` and > quotes become
// HTML. Slack escapes &, < and > in text; the body is plain text.
func (e *Export) Render(text string, r importer.Resolver) (body, htm string, mentions []string) {
	var b, h strings.Builder
	seen := map[string]bool{}
	for len(text) > 0 {
		i := strings.IndexByte(text, '<')
		if i < 0 {
			b.WriteString(text)
			h.WriteString(text)
			break
		}
		b.WriteString(text[:i])
		h.WriteString(text[:i])
		text = text[i:]
		j := strings.IndexByte(text, '>')
		if j < 0 {
			b.WriteString(text)
			h.WriteString(text)
			break
		}
		tok := text[1:j]
		text = text[j+1:]
		ref, label, _ := strings.Cut(tok, "|")
		switch {
		case strings.HasPrefix(ref, "@"):
			if uid, name, ok := r.Mention(ref[1:]); ok {
				if name == "" {
					name = uid
				}
				b.WriteString(name)
				h.WriteString(`<a href="https://matrix.to/#/` + uid + `">` + html.EscapeString(name) + `</a>`)
				if !seen[uid] {
					seen[uid] = true
					mentions = append(mentions, uid)
				}
			} else {
				if label == "" {
					label = ref
				}
				b.WriteString("@" + strings.TrimPrefix(label, "@"))
				h.WriteString("@" + html.EscapeString(strings.TrimPrefix(label, "@")))
			}
		case strings.HasPrefix(ref, "#"):
			name := label
			if n, ok := r.Channel(ref[1:]); ok && name == "" {
				name = n
			}
			if name == "" {
				name = ref[1:]
			}
			b.WriteString("#" + name)
			h.WriteString("#" + html.EscapeString(name))
		case strings.HasPrefix(ref, "!"):
			word := strings.TrimPrefix(ref, "!")
			if label != "" {
				word = strings.TrimPrefix(label, "@")
			} else if k, _, _ := strings.Cut(word, "^"); k != "" {
				word = k
			}
			b.WriteString("@" + word)
			h.WriteString("@" + html.EscapeString(word))
		default:
			url := html.UnescapeString(ref)
			if label == "" {
				label = strings.TrimPrefix(url, "mailto:")
			}
			if label == url || "mailto:"+label == url {
				b.WriteString(label)
			} else {
				b.WriteString(label + " (" + url + ")")
			}
			h.WriteString(`<a href="` + html.EscapeString(url) + `">` + html.EscapeString(html.UnescapeString(label)) + `</a>`)
		}
	}
	body = html.UnescapeString(b.String())
	htm = format(h.String())
	return body, htm, mentions
}

// format applies mrkdwn's emphasis, code and quotes to text that is
// already HTML-escaped (Slack's escaping, plus our pills and links).
func format(s string) string {
	// Code blocks first: nothing inside them is formatted.
	var out strings.Builder
	for {
		i := strings.Index(s, "```")
		if i < 0 {
			break
		}
		j := strings.Index(s[i+3:], "```")
		if j < 0 {
			break
		}
		out.WriteString(inline(s[:i]))
		out.WriteString("<pre><code>" + strings.Trim(s[i+3:i+3+j], "\n") + "</code></pre>")
		s = s[i+3+j+3:]
	}
	out.WriteString(inline(s))
	return out.String()
}

// inline formats the text outside code blocks, line by line.
func inline(s string) string {
	lines := strings.Split(s, "\n")
	var out []string
	var quote []string
	flush := func() {
		if len(quote) > 0 {
			out = append(out, "<blockquote>"+strings.Join(quote, "<br>")+"</blockquote>")
			quote = nil
		}
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "&gt; ") || l == "&gt;" {
			quote = append(quote, spans(strings.TrimPrefix(strings.TrimPrefix(l, "&gt;"), " ")))
			continue
		}
		flush()
		out = append(out, spans(l))
	}
	flush()
	res := ""
	for i, l := range out {
		if i > 0 && !strings.HasPrefix(l, "<blockquote>") && !strings.HasSuffix(out[i-1], "</blockquote>") {
			res += "<br>"
		}
		res += l
	}
	return res
}

// spans formats `code`, *bold*, _italic_ and ~strike~ within a line.
func spans(l string) string {
	var out strings.Builder
	for len(l) > 0 {
		c := l[0]
		tag := map[byte]string{'`': "code", '*': "strong", '_': "em", '~': "del"}[c]
		if tag != "" && atWordStart(out.String()) {
			if j := strings.IndexByte(l[1:], c); j > 0 && !strings.Contains(l[1:1+j], "<a ") {
				inner := l[1 : 1+j]
				if tag != "code" {
					inner = spans(inner)
				}
				out.WriteString("<" + tag + ">" + inner + "</" + tag + ">")
				l = l[2+j:]
				continue
			}
		}
		out.WriteByte(c)
		l = l[1:]
	}
	return out.String()
}

func atWordStart(before string) bool {
	if before == "" {
		return true
	}
	c := before[len(before)-1]
	return c == ' ' || c == '(' || c == '>' || c == '\t'
}
