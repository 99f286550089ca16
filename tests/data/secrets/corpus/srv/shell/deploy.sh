#!/bin/sh
export AWS_SECRET_ACCESS_KEY=JIQuwIDOvmPYju0YO5ogxDOrP7nGc8IkgJYhXa1j
curl -H "Authorization: token ghp_QsFMXXzVYGUr1sT6uCH3xIFVBauxlR2Q4Qqk" https://api.github.com/user
