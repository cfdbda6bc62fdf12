// The dashboard (stub until the pages land): shows that the page loaded.
const app = document.getElementById("app");
app.textContent = "alectio dashboard";
document.documentElement.dataset.rendered = "1";
